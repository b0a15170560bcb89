"""Shared utilities.

Importing this package asks PyTorch's CPU allocator for transparent huge pages
(:func:`util.memory.request_huge_pages`): it must happen before the process's first tensor
allocation, and every entry point imports ``util`` before it loads weights.
"""
from util.memory import request_huge_pages as _request_huge_pages

_request_huge_pages()
