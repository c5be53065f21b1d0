"""`python -m plait.demo` runs the mesh demo; `python -m plait.demo single` the one-sidecar
demo."""

import sys

if sys.argv[1:2] == ["single"]:
    from plait.demo.single import main

    raise SystemExit(main(sys.argv[2:]))

from plait.demo.mesh import main

raise SystemExit(main())
