"""Run the benchmark suite from a checkout: ``python benchmarks/run.py [--quick] ...``.

The suite lives in the installed package (``reqrep.bench``); this is the same as
``python -m reqrep bench`` with the same options.
"""

from __future__ import annotations

import sys

from reqrep.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
