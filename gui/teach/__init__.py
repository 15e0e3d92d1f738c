"""The Teach tab: why each channel goes, criteria side by side, dependency groups, feature maps."""
from gui.teach.tab import TeachTab

__all__ = ["TeachTab"]
