"""Salt loader modules of salt_ws (installed as salt_ws.ext_runners; Salt skips this file)."""
