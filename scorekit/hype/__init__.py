"""Human evaluation of generated images: HYPE_inf real-vs-fake studies (Zhou et al., NeurIPS 2019).

``study`` creates a study (images under opaque ids, the SQLite database), ``session`` is one rater's
progress in the database, ``server`` the web page and API, ``report`` the statistics.
"""
