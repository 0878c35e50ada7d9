"""`python -m mobile_demo`: see `mobile_demo.demo`."""

import sys

from mobile_demo.demo import main

sys.exit(main())
