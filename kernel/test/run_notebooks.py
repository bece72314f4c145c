"""Executes every notebook in notebooks/ headlessly against the `lathe` kernel (run by notebooks.test.ts).

Usage: run_notebooks.py NOTEBOOK_DIR OUT_DIR [NAME ...]. Small step counts come from LATHE_STEPS in the
environment, which the kernel inherits. Writes each executed notebook to OUT_DIR and prints one JSON line
per notebook: {"notebook", "seconds", "cells", "ok", "error"?}.
"""
import json
import os
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main():
    src, out = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or sorted(f for f in os.listdir(src) if f.endswith(".ipynb"))
    failed = 0
    for name in names:
        nb = nbformat.read(os.path.join(src, name), as_version=4)
        client = NotebookClient(nb, kernel_name="lathe", timeout=600, startup_timeout=60, resources={"metadata": {"path": src}})
        t0 = time.time()
        result = {"notebook": name, "cells": sum(c.cell_type == "code" for c in nb.cells), "ok": True}
        try:
            client.execute()
        except CellExecutionError as e:
            result.update(ok=False, error=str(e)[-4000:])
            failed += 1
        result["seconds"] = round(time.time() - t0, 1)
        nbformat.write(nb, os.path.join(out, name))
        print(json.dumps(result), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
