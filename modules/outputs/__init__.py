"""Writing results to disk: file naming and counters, atomic saving, grids, and the A1111
infotext that is embedded in every image. No model or UI code lives here."""
