"""Readers of the real layouts: FlyingChairs (both namings), Middlebury, PASCAL VOC, COCO instances
(RGB-D SOD and ImageFolder: tests/test_evaluation_saliency.py, tests/test_evaluation_classification.py)."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from PIL import Image

from zoo.data import CocoDetection, FlyingChairs, Middlebury, VOCSegmentation, dataset_from_spec
from zoo.errors import InputError
from zoo.data.readers import decode_voc_rgb, voc_colormap
from zoo.flow import epe, write_flo
from zoo.io import write_png


def test_flyingchairs_examples_real(realdata):
    ds = FlyingChairs(realdata / "flyingchairs" / "data")
    assert len(ds) == 4 and [item[0] for item in ds.items] == ["0000000", "0000001", "0000002", "0000003"]
    s = ds[0]
    assert s["image1"].shape == s["image2"].shape == (3, 384, 512) and s["flow"].shape == (2, 384, 512)
    assert 0 <= float(s["image1"].min()) and float(s["image1"].max()) <= 1 and bool(s["valid"].all())
    zero = [float(epe(torch.zeros(1, 2, 384, 512), ds[i]["flow"][None])) for i in range(4)]
    assert sum(zero) / 4 == pytest.approx(5.23, abs=0.005)


def test_flyingchairs_release_naming_real(realdata):
    ds = FlyingChairs(realdata / "flyingchairs_mmflow_crops")
    assert len(ds) == 1 and ds[0]["id"] == "00001" and ds[0]["flow"].shape == (2, 50, 50)


def _pair(tmp_path, stem, f1, f2, ff, flow):
    for name in (f1, f2):
        write_png((torch.rand(3, 8, 10) * 255).to(torch.uint8), tmp_path / "x.png")
        Image.open(tmp_path / "x.png").save(tmp_path / name.format(stem))
    write_flo(flow, tmp_path / ff.format(stem))


def test_flyingchairs_synthetic_split_and_unknown(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        flow = torch.full((2, 8, 10), float(i))
        if i == 2:
            flow[:, 0, 0] = 1e10
        _pair(data, f"{i:05d}", "{}_img1.ppm", "{}_img2.ppm", "{}_flow.flo", flow)
    (tmp_path / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
    assert len(FlyingChairs(data)) == 3
    train, val = FlyingChairs(data, split="train"), FlyingChairs(data, split="val")
    assert [i[0] for i in train.items] == ["00000", "00002"] and [i[0] for i in val.items] == ["00001"]
    s = train[1]
    assert not bool(s["valid"][0, 0]) and int(s["valid"].sum()) == 79 and float(s["flow"][0, 0, 0]) == 0.0
    with pytest.raises(FileNotFoundError, match="no FlyingChairs pairs"):
        FlyingChairs(tmp_path)


def test_middlebury_layout(tmp_path):
    for seq in ("Dimetrodon", "Venus"):
        (tmp_path / "other-data" / seq).mkdir(parents=True)
        for f in ("frame10.png", "frame11.png"):
            write_png((torch.rand(3, 6, 7) * 255).to(torch.uint8), tmp_path / "other-data" / seq / f)
    (tmp_path / "other-data" / "Army").mkdir()   # no ground truth: skipped
    flow = torch.ones(2, 6, 7)
    flow[:, 2, 3] = 1.7e9
    write_flo(flow, tmp_path / "other-gt-flow" / "Dimetrodon" / "flow10.flo")
    write_flo(torch.zeros(2, 6, 7), tmp_path / "other-gt-flow" / "Venus" / "flow10.flo")
    ds = Middlebury(tmp_path)
    assert [i[0] for i in ds.items] == ["Dimetrodon", "Venus"]
    s = ds[0]
    assert s["image1"].shape == (3, 6, 7) and not bool(s["valid"][2, 3]) and int(s["valid"].sum()) == 41
    with pytest.raises(FileNotFoundError):
        Middlebury(tmp_path, sequences=["Army"])


def test_voc_palette_png(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    Image.new("RGB", (5, 4), (10, 20, 30)).save(root / "JPEGImages" / "a.jpg")
    mask = Image.new("P", (5, 4), 0)
    mask.putpalette(voc_colormap().flatten().tolist())
    mask.putpixel((1, 1), 15)
    mask.putpixel((2, 1), 255)
    mask.save(root / "SegmentationClass" / "a.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    ds = VOCSegmentation(tmp_path / "VOCdevkit", split="val")
    s = ds[0]
    assert s["image"].shape == (3, 4, 5) and s["label"].dtype == torch.int64
    assert int(s["label"][1, 1]) == 15 and int(s["label"][1, 2]) == 255 and int(s["label"].sum()) == 15 + 255
    with pytest.raises(FileNotFoundError, match="train.txt"):
        VOCSegmentation(root, split="train")


def test_voc_real(realdata):
    root = realdata / "voc2012_datum" / "VOC2012"
    assert len(VOCSegmentation(root, split=None)) == 2
    val = dataset_from_spec(f"voc:{root}@val")
    assert [i[0] for i in val.items] == ["2007_000033"]
    s = val[0]
    values = set(s["label"].unique().tolist())
    assert 255 in values and 0 in values and values <= set(range(21)) | {255}
    assert s["image"].shape[-2:] == s["label"].shape


def test_voc_rgb_targets_real(realdata):
    from zoo.io import read_image

    rgb = read_image(realdata / "voc2012_val_samples_vainf" / "1_target.png")
    label = decode_voc_rgb(rgb)
    values = set(label.unique().tolist())
    assert values <= set(range(21)) | {255} and len(values - {0, 255}) >= 1
    # round trip through the palette
    cmap = voc_colormap()
    known = label != 255
    assert torch.equal(cmap[label[known]].T.long(), rgb[:, known].long())


def test_dataset_spec_errors():
    with pytest.raises(ValueError, match="unknown dataset spec"):
        dataset_from_spec("kitti:/x")
    with pytest.raises(ValueError, match="give a folder"):
        dataset_from_spec("voc:")


def _coco(root, images, split="val2017"):
    """COCO layout: annotations/instances_<split>.json and images/<split>/<file>; images = [(id, h, w, on_disk)]."""
    (root / "annotations").mkdir(parents=True)
    (root / "images" / split).mkdir(parents=True)
    data = {"images": [], "annotations": [], "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}]}
    for image_id, h, w, on_disk in images:
        name = f"{image_id:012d}.jpg"
        data["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        if on_disk:
            Image.new("RGB", (w, h), (1, 2, 3)).save(root / "images" / split / name)
        data["annotations"].append({"id": 10 * image_id, "image_id": image_id, "category_id": 18, "iscrowd": 0,
                                    "bbox": [1.5, 2.0, 3.0, 4.25], "area": 12.75,
                                    "segmentation": [[1.5, 2, 4.5, 2, 4.5, 6.25]]})
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_coco_layout(tmp_path):
    root = _coco(tmp_path / "coco", [(7, 10, 12, True), (3, 8, 9, True)])
    ds = dataset_from_spec(f"coco:{root}")          # the single annotations/instances_*.json
    assert ds.image_ids == [3, 7] and ds.image_dir == root / "images" / "val2017" and ds.categories[18] == "dog"
    s = ds[0]
    assert s["id"] == "3" and s["image_id"] == 3 and s["image"].shape == (3, 8, 9)
    torch.testing.assert_close(s["boxes"], torch.tensor([[1.5, 2.0, 4.5, 6.25]]))
    assert s["labels"].tolist() == [18] and s["iscrowd"].tolist() == [False]
    assert ds.annotations_of(7)[0]["id"] == 70
    assert dataset_from_spec(f"coco:{root}@instances_val2017.json").image_ids == [3, 7]
    assert CocoDetection(root, root / "annotations" / "instances_val2017.json").image_ids == [3, 7]
    with pytest.raises(FileNotFoundError, match="not found"):
        dataset_from_spec(f"coco:{root}@instances_train2017.json")


def test_coco_missing_images_and_errors(tmp_path):
    root = _coco(tmp_path / "coco", [(1, 8, 8, False), (2, 8, 8, True), (3, 6, 8, True)])
    with pytest.raises(FileNotFoundError, match="1 of the 3 images"):
        CocoDetection(root)
    ds = CocoDetection(root, skip_missing=True)
    assert ds.image_ids == [2, 3] and len(ds) == 2
    (root / "images" / "val2017" / "000000000003.jpg").unlink()
    Image.new("RGB", (8, 8)).save(root / "images" / "val2017" / "000000000003.jpg")   # 8 x 8, json says 6 x 8
    with pytest.raises(InputError, match="annotations say"):
        ds[1]
    (root / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="expected one"):
        CocoDetection(root)
    with pytest.raises(InputError, match="not a COCO instances file"):
        CocoDetection(root, "instances_train2017.json")


def test_coco_real(realdata):
    root = realdata / "coco128_subset"
    ds = dataset_from_spec(f"coco:{root}@instances_subset8.json")
    assert len(ds) == 8 and len(ds.categories) == 80 and ds.image_dir.name == "train2017"
    assert sum(len(ds.annotations_of(i)) for i in ds.image_ids) == 109
    with pytest.raises(FileNotFoundError, match="120 of the 128 images"):
        dataset_from_spec(f"coco:{root}@instances_train2017_coco128_full.json")
    full = CocoDetection(root, "instances_train2017_coco128_full.json", skip_missing=True)
    assert full.image_ids == ds.image_ids


def test_coco_instance_masks_polygons_and_rle(tmp_path):
    """Polygons, uncompressed and compressed RLE and a crowd region decode to the pixel blocks they were
    written from, as pycocotools' own COCO.annToMask decodes them."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    from support.coco_folder import IMAGES, write_coco

    ds = CocoDetection(write_coco(tmp_path / "coco"))
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(ds.annotation_file))
    for index, (image_id, h, w, objects) in enumerate(IMAGES):
        masks = ds.instance_masks(index)
        assert masks.shape == (len(objects), h, w) and masks.dtype == torch.bool
        for mask, ann, (_, x1, y1, x2, y2, _, _) in zip(masks, ds.annotations_of(image_id), objects):
            block = torch.zeros(h, w, dtype=torch.bool)
            block[y1:y2, x1:x2] = True
            assert torch.equal(mask, block)
            assert torch.equal(mask, torch.from_numpy(api.annToMask(ann)).bool())


def test_coco_instance_masks_real(realdata):
    pytest.importorskip("pycocotools")
    ds = dataset_from_spec(f"coco:{realdata / 'coco128_subset'}@instances_subset8.json")
    masks = ds.instance_masks(0)
    anns = ds.annotations_of(ds.image_ids[0])
    assert masks.shape == (len(anns), *ds[0]["image"].shape[-2:])
    for mask, ann in zip(masks, anns):   # COCO's area is the polygon's pixel count (to rounding)
        assert abs(int(mask.sum()) - ann["area"]) <= 0.05 * ann["area"] + 20


def test_rgbd_sod_real(realdata):
    ds = dataset_from_spec(f"rgbd-sod:{realdata / 'rgbd_sod_SSD'}")
    assert [i[0] for i in ds.items] == ["histrory10301", "histrory10401", "histrory10501"]
    s = ds[0]
    assert s["image"].shape == (3, 1080, 960) and s["depth"].shape == (1, 1080, 960) and s["mask"].shape == (1080, 960)
    assert 0 < float(s["mask"].float().mean()) < 1 and 0 <= float(s["depth"].min()) and float(s["depth"].max()) <= 1


def test_rgbd_sod_16bit_depth(tmp_path):
    from zoo.data import RGBDSaliency

    for d in ("Image", "Depth", "Mask"):   # HDFNet's folder names
        (tmp_path / d).mkdir()
    Image.new("RGB", (6, 4)).save(tmp_path / "Image" / "a.jpg")
    Image.new("I;16", (6, 4), 13107).save(tmp_path / "Depth" / "a.png")
    Image.new("L", (6, 4), 200).save(tmp_path / "Mask" / "a.png")
    s = RGBDSaliency(tmp_path)[0]
    torch.testing.assert_close(s["depth"], torch.full((1, 4, 6), 0.2))
    assert bool(s["mask"].all())
