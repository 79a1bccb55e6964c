"""The pictures a run leaves for its loggers: the confusion matrix as a heat map, and grids of
sample inputs labelled predicted/true (CHW uint8 tensors)."""

import math

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor


def sample_grid(images: Tensor, pred: list[str], true: list[str], scale: int = 4) -> Tensor:
    """Images (N, C, H, W in [0, 1]) with 'pred/true' under each: green right, red wrong."""
    tiles = []
    for img, p, t in zip(images, pred, true, strict=True):
        img = (img.clamp(0, 1) * 255).to(torch.uint8)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        tile = Image.new("RGB", (max(pil.width, 48), pil.height + 14), "white")
        tile.paste(pil, (0, 0))
        ImageDraw.Draw(tile).text(
            (1, pil.height + 1),
            f"{p}/{t}"[:12],
            font=_font(),
            fill=(0, 128, 0) if p == t else (200, 0, 0),
        )
        tiles.append(torch.from_numpy(_array(tile)).permute(2, 0, 1))
    from torchvision.utils import make_grid  # lazily: importing torchvision costs seconds

    return make_grid(tiles, nrow=int(math.ceil(math.sqrt(len(tiles)))), pad_value=255)


MAX_DRAWN = 30  # classes in the confusion picture; metrics.json keeps the whole matrix


def confusion_image(cm: Tensor, names: list[str], cell: int = 28) -> Tensor:
    """The confusion matrix (rows true, columns predicted) as a CHW uint8 heat map with counts;
    beyond MAX_DRAWN classes, the MAX_DRAWN with the most examples (its size stays bounded)."""
    title = "predicted ->"
    if len(names) > MAX_DRAWN:
        keep = cm.sum(1).topk(MAX_DRAWN).indices.sort().values
        title = f"the {MAX_DRAWN} most frequent of {len(names)} classes; predicted ->"
        cm, names = cm[keep][:, keep], [names[i] for i in keep.tolist()]
    k = len(names)
    margin = 40
    img = Image.new("RGB", (margin + k * cell, margin + k * cell), "white")
    draw = ImageDraw.Draw(img)
    rows = cm.double() / cm.sum(1, keepdim=True).clamp_min(1)
    for i in range(k):
        draw.text((2, margin + i * cell + 8), names[i][:5], font=_font(), fill="black")
        draw.text((margin + i * cell + 2, 2), names[i][:5], font=_font(), fill="black")
        for j in range(k):
            shade = int(255 * (1 - rows[i, j].item()))
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255))
            draw.text(
                (x + 2, y + 8),
                str(int(cm[i, j])),
                font=_font(),
                fill="white" if shade < 128 else "black",
            )
    draw.text((margin, margin - 14), title, font=_font(), fill="gray")
    return torch.from_numpy(_array(img)).permute(2, 0, 1)


def _font():
    return ImageFont.load_default()


def _array(img: Image.Image):
    import numpy as np

    return np.asarray(img).copy()
