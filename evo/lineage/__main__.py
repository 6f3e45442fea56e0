import sys

from evo.lineage import main

sys.exit(main())
