"""Built-in codecs, one module per encoder family; importing this package registers them."""
from . import array_rans, embedding_pq, embedding_rq, image_vqgan, weights_lossless, weights_lr2vq, weights_quant  # noqa: F401
