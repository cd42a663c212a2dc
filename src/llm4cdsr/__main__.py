import sys

from llm4cdsr.cli import main

sys.exit(main())
