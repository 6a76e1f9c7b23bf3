"""The web console: a live incident board, timelines, delivery matrix, audit page, 30-day charts."""
