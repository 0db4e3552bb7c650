"""``python -m kube_emulator --port 0 --kubeconfig FILE``: serve until SIGINT/SIGTERM."""

import sys

from kube_emulator.server import main

sys.exit(main())
