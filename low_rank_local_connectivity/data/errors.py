"""The error of a dataset that is not where it was looked for."""

OPTION = "{option}"


class DataNotFoundError(FileNotFoundError):
    """The dataset is not prepared in `data_dir` and may not or could not be fetched.

    The message names the options as arguments of `data.resolve`
    (`download=True`); `named_for(prefix)` returns the same error with them
    named for another interface, e.g. '--config.dataset.' for scripts/train.py.
    The error keeps only its template (options written `{option}<name>`), so
    it pickles and crosses process boundaries.

    Args:
        template: str, the message with every option written
            `{option}<name>`, e.g. '{option}download is False'.
        option: str, the prefix the options are named with in this message.
    """

    def __init__(self, template, option=""):
        super().__init__(template.replace(OPTION, option))
        self.template = template
        self.option = option

    def __reduce__(self):
        return type(self), (self.template, self.option)

    def named_for(self, prefix):
        """This error with its options named `<prefix><option>`."""
        return type(self)(self.template, prefix)
