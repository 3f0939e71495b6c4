"""One place for measurements the closing notes quote: _out/measurements.json, printed as it is kept."""

import json
import pathlib

MEASURE = pathlib.Path(__file__).resolve().parents[2] / "_out" / "measurements.json"


def record(key, value):
    MEASURE.parent.mkdir(exist_ok=True)
    data = json.loads(MEASURE.read_text()) if MEASURE.exists() else {}
    data[key] = value
    MEASURE.write_text(json.dumps(data, indent=1))
    print(f"MEASURED {key} = {value}")
