"""Run by Debian's system Python (python3-qgis), not geoseg's: load geoseg outputs in QGIS itself,
headless, and report what QGIS sees: renderer type, class values/labels/colours, and the colours
rendered at given pixels. Input and output are JSON (argv[1] in, stdout out)."""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize


def _hex(c):  # QColor
    return f"#{c.red():02x}{c.green():02x}{c.blue():02x}"


def render(layer, extent, width, height, pixels):
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, height))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    img = job.renderedImage()
    return [_hex(img.pixelColor(int(x), int(y))) for x, y in pixels]


def main():
    args = json.loads(open(sys.argv[1]).read())
    app = QgsApplication([], False)
    app.initQgis()
    out = {"qgis": Qgis.QGIS_VERSION}
    ras = QgsRasterLayer(args["raster"], "labels")
    r = ras.renderer()
    out["raster"] = {
        "valid": ras.isValid(), "renderer": r.type(),
        "classes": [[int(c.value), c.label, _hex(c.color)] for c in getattr(r, "classes", lambda: [])()],
        "rendered": render(ras, ras.extent(), ras.width(), ras.height(), args["pixels"]),
    }
    poly = QgsVectorLayer(args["polygons"], "polygons", "ogr")
    pr = poly.renderer()
    out["polygons"] = {
        "valid": poly.isValid(), "renderer": pr.type(),
        "classes": [[int(c.value()), c.label(), _hex(c.symbol().color())] for c in getattr(pr, "categories", lambda: [])()],
        "names": sorted({f["class_name"] for f in poly.getFeatures()}),
        "rendered": render(poly, ras.extent(), ras.width(), ras.height(), args["pixels"]),
    }
    reg = QgsVectorLayer(args["regions"], "regions", "ogr")
    rr = reg.renderer()
    out["regions"] = {
        "valid": reg.isValid(), "renderer": rr.type(), "attr": getattr(rr, "classAttribute", lambda: "")(),
        "ranges": [[rg.lowerValue(), rg.upperValue(), _hex(rg.symbol().color())] for rg in getattr(rr, "ranges", lambda: [])()],
    }
    print(json.dumps(out), flush=True)
    os._exit(0)  # QGIS 3.22 may crash tearing down headless; the answer is out


if __name__ == "__main__":
    main()
