"""Text + knowledge → vectors and predictions: the HF text encoder and knowledge-fused variants.

`encoders` imports `kg` only.
"""

from encoders.text import TextEncoder, default_model_path

__all__ = ["TextEncoder", "default_model_path"]
