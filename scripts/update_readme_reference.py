"""Replace the README's configuration reference with ``securehpc config-reference`` output."""

from pathlib import Path

from jupyter_securehpc.config_reference import END, START, reference

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
before, _, rest = text.partition(START)
_, _, after = rest.partition(END)
readme.write_text(before + reference() + after)
