"""``OWNER/DATASET``: how a dataset is named outside its own project (job specs, shares, mounts, key maps)."""

from __future__ import annotations

from typing import NamedTuple

from .names import InvalidName, validate_name


class DatasetRef(NamedTuple):
    """A dataset and the project that owns it; ``str()`` gives ``OWNER/DATASET``.

    A tuple, so that code written for ``(owner, dataset)`` pairs (sorting, unpacking, comparing) keeps working.
    Build one from untrusted text with :meth:`parse`, from two names with :meth:`of`: both check the names.
    """

    owner: str
    dataset: str

    @classmethod
    def of(cls, owner: str, dataset: str) -> DatasetRef:
        """The reference to ``dataset`` of project ``owner``, both names checked (raises InvalidName)."""
        return cls(validate_name("project", owner), validate_name("dataset", dataset))

    @classmethod
    def parse(cls, text: object) -> DatasetRef:
        """``"OWNER/DATASET"`` -> DatasetRef; anything else (no '/', two '/', an empty or bad name) raises."""
        if not isinstance(text, str):
            raise InvalidName(f"dataset reference {text!r} is not a string PROJECT/DATASET")
        owner, sep, dataset = text.partition("/")
        if not sep or not owner or not dataset or "/" in dataset:
            raise InvalidName(f"dataset reference {text!r} is not PROJECT/DATASET (for example sleep/psg)")
        return cls.of(owner, dataset)

    def __str__(self) -> str:
        return f"{self.owner}/{self.dataset}"
