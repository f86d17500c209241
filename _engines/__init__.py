"""Salt loader modules of salt_ws (installed as salt_ws.ext_engines; Salt skips this file)."""
