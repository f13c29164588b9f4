//! Call progress analysis (answering machine, fax and tone detection): pure DSP over PCM frames.
