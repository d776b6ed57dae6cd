import os
import sys

# tests/reference.py and other helpers are imported as top-level modules
sys.path.insert(0, os.path.dirname(__file__))
