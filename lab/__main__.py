import sys

from lab.harness import main

sys.exit(main())
