"""The station's local web page: slot board, recordings, cases, burning, audit, health.

``app.make_app`` builds the aiohttp application; ``routes.ROUTES`` is the one table that
decides who may use what; ``security`` holds sessions, CSRF, throttling and headers;
``i18n`` every string in Chinese and English; ``views/`` the handlers; ``templates/`` and
``static/`` the pages, without a build step.
"""
