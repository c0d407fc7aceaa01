"""Executes a notebook top to bottom with nbclient (as CI does); fails on the first error."""

import sys

import nbformat
from nbclient import NotebookClient

path = sys.argv[1] if len(sys.argv) > 1 else "examples/python-experiment.ipynb"
nb = nbformat.read(path, as_version=4)
for cell in nb.cells:
    if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
        sys.exit(f"{path}: commit notebooks without outputs")
NotebookClient(nb, timeout=300, kernel_name="python3").execute()
print(f"{path}: executed {sum(c.cell_type == 'code' for c in nb.cells)} code cells")
