"""`python -m minibuild`: the command line."""

import sys

from minibuild.cli.main import main

sys.exit(main())
