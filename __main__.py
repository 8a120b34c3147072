import sys

from pybuild.cli.main import main

sys.exit(main())
