"""PNG plots: data in (lists, dicts, DataFrames), PNG bytes out, no file I/O; callers write the bytes.

One module per engine or page that draws them; `common` holds what they share. The engines and `report/` import
these modules lazily, because matplotlib takes a second to import and most commands draw nothing.
"""
