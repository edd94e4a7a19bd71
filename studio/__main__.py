"""`python -m studio` is `finetune-studio` (the training child process is started this way)."""

import sys

from studio.cli import main

sys.exit(main())
