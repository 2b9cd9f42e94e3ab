"""The audit's two mask readers on one real annotation: labelme's instance-segmentation
example (three PASCAL VOC 2011 photos, polygons drawn in labelme) as labelme exports it twice,
to VOC segmentation PNGs (labelme2voc.py: SegmentationClassPNG, SegmentationObjectPNG,
class_names.txt) and to COCO JSON (labelme2coco.py: polygons). Read by ``open_dataset``
(``voc-seg`` and ``coco``, pycocotools decoding the polygons), each image's mask per label
should be the same pixels, up to how PIL (labelme's PNGs) and pycocotools rasterise a
polygon's edge. Prints the objects each reader finds and the IoU of the two masks per image
and label. Nothing is written; the photos stay in Debian's package.

    apt-get download labelme-examples && dpkg-deb -x labelme-examples_*.deb /tmp/lm
    python tools/check_labelme_masks.py \\
        /tmp/lm/usr/share/doc/labelme-examples/examples/instance_segmentation
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ort_cam.audit.datasets import Dataset, open_dataset


def masks_by_label(ds: Dataset) -> dict[tuple[str, str], np.ndarray]:
    """(image file name, label) -> the union of that label's object masks."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for s in ds.samples:
        for o in s.objects:
            assert o.mask is not None, (s.key, o.label)
            key = (Path(s.key).name, o.label)
            m = o.mask.decode()
            out[key] = out[key] | m if key in out else m
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("example", type=Path, help="labelme's examples/instance_segmentation")
    args = ap.parse_args()
    voc = open_dataset(args.example / "data_dataset_voc", "voc-seg")
    coco = open_dataset(args.example / "data_dataset_coco" / "annotations.json", "coco")
    for name, ds in (("voc-seg", voc), ("coco", coco)):
        print(f"{name}: {len(ds.samples)} images, "
              f"{sum(len(s.objects) for s in ds.samples)} objects")
    a, b = masks_by_label(voc), masks_by_label(coco)
    print(f"labels per image: voc-seg {len(a)}, coco {len(b)}, in both {len(set(a) & set(b))}")
    ious = []
    for key in sorted(set(a) & set(b)):
        inter, union = int((a[key] & b[key]).sum()), int((a[key] | b[key]).sum())
        ious.append(inter / union)
        print(f"  {key[0]} {key[1]:12s} pixels {int(a[key].sum()):6d} (voc-seg) "
              f"{int(b[key].sum()):6d} (coco)  IoU {inter / union:.4f}")
    print(f"IoU: min {min(ious):.4f}, mean {np.mean(ious):.4f}")


if __name__ == "__main__":
    main()
