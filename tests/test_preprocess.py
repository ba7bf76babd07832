"""The torch-free preprocessing must equal the seed's torchvision transform, bit for bit."""
import cv2
import numpy as np
import pytest
from PIL import Image

from fer_export.errors import InputError
from fer_export.folders import labelled_images
from fer_export.preprocess import preprocess, read_color, read_gray, to_gray
from fer_export.spec import SEED_SPEC, ModelSpec


def seed_transform(size):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                               transforms.Normalize([0.485], [0.229])])


@pytest.mark.parametrize("size", [(224, 224), (48, 48), (64, 96)])
def test_matches_torchvision_on_real_faces(fer2013, photos, size):
    spec = SEED_SPEC.replace(input_size=list(size))
    files = [p for p, _ in labelled_images(fer2013 / "val", spec.labels, limit_per_class=3)]
    files += [photos / "fer_justin.jpg", photos / "fr_lin-manuel-miranda.png"]  # downscaling path too
    t = seed_transform(size)
    expected = np.stack([t(Image.fromarray(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))).numpy() for f in files])
    got = preprocess([read_gray(f) for f in files], spec)
    assert got.dtype == np.float32 and got.shape == (len(files), 1, *size)
    np.testing.assert_array_equal(got, expected)


def test_to_gray_handles_colour_alpha_16bit_and_float():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(to_gray(bgr), gray)
    np.testing.assert_array_equal(to_gray(np.dstack([bgr, np.zeros((10, 12), np.uint8)])), gray)
    np.testing.assert_array_equal(to_gray(gray.astype(np.uint16) * 257), gray)
    np.testing.assert_array_equal(to_gray(gray / 255.0), gray)
    with pytest.raises(InputError, match="dtype"):
        to_gray(gray.astype(np.int64))


def test_read_gray_16bit_png_and_rgba(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), ramp)
    g = read_gray(tmp_path / "deep.png")
    assert g.dtype == np.uint8 and g.max() == round(ramp.max() / 257)
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert read_gray(tmp_path / "rgba.png").shape == (20, 20)
    assert read_color(tmp_path / "rgba.png").shape == (20, 20, 3)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"not an image at all", "not a readable image")])
def test_unreadable_images_name_the_file(tmp_path, content, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    for reader in (read_gray, read_color):
        with pytest.raises(InputError, match=message) as info:
            reader(bad)
        assert str(bad) in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        read_gray(tmp_path / "missing.png")


def test_three_channel_spec_repeats_gray():
    spec = ModelSpec(channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=(32, 32))
    x = preprocess([np.full((40, 40), 255, np.uint8)], spec)
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(x, 2.0)


@pytest.mark.parametrize("orientation, turn", [(6, cv2.ROTATE_90_CLOCKWISE), (8, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                               (3, cv2.ROTATE_180)])
def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path, orientation, turn):
    """A phone photo taken sideways is stored sideways with an orientation tag: the detector must see
    it upright (as cv2.imread shows it), in colour and in gray alike."""
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :20] = (0, 0, 255)  # a red band on the stored image's left edge, to see where it goes
    im = Image.fromarray(stored[..., ::-1])
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=95)
    upright = cv2.rotate(stored, turn)
    color = read_color(path)
    assert color.shape == upright.shape and np.abs(color.astype(int) - upright).mean() < 3
    assert read_gray(path).shape == upright.shape[:2]


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A PNG that states 30000 x 30000 pixels is refused before decoding (which would take ~2.7 GB)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + bytes(64 * 1024))
    for read in (read_gray, read_color):
        with pytest.raises(InputError, match=r"bomb\.png: 30000x30000 pixels, more than"):
            read(bomb)


def test_a_float_image_holding_0_to_255_is_not_saturated():
    ramp = np.linspace(0, 255, 64, dtype=np.float32).reshape(8, 8)
    assert np.array_equal(to_gray(ramp), np.rint(ramp).astype(np.uint8))  # e.g. a float TIFF from a scanner
    assert np.array_equal(to_gray(ramp / 255), np.rint(ramp).astype(np.uint8))  # the usual [0, 1]
    assert to_gray(np.full((4, 4), 1.0004, np.float32)).max() == 255  # a small overshoot is still [0, 1]
