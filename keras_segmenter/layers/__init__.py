from keras_segmenter.layers.drop_path import DropPath
from keras_segmenter.layers.dropout import Dropout
from keras_segmenter.layers.linear_decoder import LinearDecoder
from keras_segmenter.layers.mask_transformer import MaskTransformer
from keras_segmenter.layers.multi_head_attention import MultiHeadSelfAttention, softmax_attention
from keras_segmenter.layers.normalization import ImageNormalization
from keras_segmenter.layers.padding import PadToMultiple, ResizeAndCrop
from keras_segmenter.layers.patch_embedding import PatchEmbedding
from keras_segmenter.layers.position_embedding import (
    PositionEmbedding,
    resize_position_embedding,
)
from keras_segmenter.layers.prefix_tokens import PrefixTokens
from keras_segmenter.layers.transformer_block import TransformerBlock
