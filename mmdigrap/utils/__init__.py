"""Small helpers shared by the package and the tools (no projection math here)."""
from .misc import markdown_table, unwrap_model

__all__ = ['markdown_table', 'unwrap_model']
