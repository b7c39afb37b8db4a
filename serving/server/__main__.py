"""`python -m serving.server`: tfzoo-model-server."""
import sys

from serving.server.main import main

sys.exit(main())
