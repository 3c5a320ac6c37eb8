"""The Bazel BUILD file covers every source, script and test, and nothing missing."""

from tests.conftest import REPO_ROOT


def _targets():
    """Evaluates BUILD (Starlark subset) with recording stand-ins for the rules."""
    targets = []

    def rule(kind):
        def record(name, srcs=(), data=(), deps=(), main=None, **kwargs):
            del deps, kwargs
            targets.append(
                dict(kind=kind, name=name, srcs=list(srcs), data=list(data), main=main)
            )

        return record

    namespace = {
        "load": lambda *args: None,
        "requirement": lambda name: f"@pip//{name}",
        "glob": lambda patterns: sorted(
            str(path.relative_to(REPO_ROOT))
            for pattern in patterns
            for path in REPO_ROOT.glob(pattern)
        ),
        "package": lambda **kwargs: None,
        "py_library": rule("py_library"),
        "py_binary": rule("py_binary"),
        "py_test": rule("py_test"),
    }
    exec(compile((REPO_ROOT / "BUILD").read_text(), "BUILD", "exec"), namespace)
    return targets


# The tools run as programs; every other file of `tools/` is a library.
TOOL_PROGRAMS = {
    f"tools/{name}.py" for name in (
        "backend_throughput", "derive_mnist_order", "determinism_cost", "fault_campaign",
        "make_layer_fixtures", "make_mnist_small", "precision_throughput",
    )
}


def _python_files(folder, pattern="*.py"):
    return {
        str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / folder).rglob(pattern)
    }


def test_every_file_of_every_target_exists():
    for target in _targets():
        for path in target["srcs"] + target["data"]:
            assert (REPO_ROOT / path).is_file(), f"{target['name']}: {path} missing"


def test_every_python_file_is_in_a_target_of_the_right_kind():
    covered = {}
    for target in _targets():
        for path in target["srcs"]:
            covered.setdefault(path, set()).add(target["kind"])
    expectations = [
        (_python_files("low_rank_local_connectivity"), "py_library"),
        (_python_files("scripts"), "py_binary"),
        (_python_files("tools") - TOOL_PROGRAMS, "py_library"),
        (TOOL_PROGRAMS, "py_binary"),
        (_python_files("tests", "test_*.py"), "py_test"),
    ]
    for files, kind in expectations:
        for path in sorted(files):
            assert kind in covered.get(path, set()), f"{path} is not in a {kind}"


def test_one_test_target_per_test_file_and_data_files_shipped():
    tests = [t for t in _targets() if t["kind"] == "py_test"]
    assert all(len(t["srcs"]) == 1 for t in tests)
    names = [t["name"] for t in tests]
    assert len(names) == len(set(names))
    data = {path for t in _targets() for path in t["data"]}
    shipped = {
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "low_rank_local_connectivity").rglob("*.npz")
    }
    assert shipped <= data, f"package data not in any target: {shipped - data}"
