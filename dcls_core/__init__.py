"""dcls_core: DiffusionCLS as a plain-PyTorch library (no Ray inside).

Pipeline order: data → proxy → importance → generator → generation → classifier → evaluation → report.
"""
__version__ = "0.1.0"
