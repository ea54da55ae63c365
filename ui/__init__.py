"""Streamlit-only helpers for the app: session state, cached resources and small widgets.

Everything here may import Streamlit; the `recengine` library never does. Pages import
from `ui` to keep themselves a plain description of the screen.
"""
