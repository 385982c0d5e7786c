import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/analytic.py and friends
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
