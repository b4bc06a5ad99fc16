"""Per-version analysis of real traffic from Workers Analytics Engine (docs/analytics.md).

- ``query``: the SQL cfops sends (built from the data-point layout in ``immcad_api.analytics``) and the
  typed reading of its answer;
- ``client``: the SQL API over httpx — bearer token, bounded retries, one-line errors;
- ``gates``: the verdict of one stage (pure: numbers in, pass / fail / inconclusive with a reason out);
- ``rehearsal``: the rehearsal's analysis — the configured gates tried on seeded versions;
- ``command``: ``python -m cfops.analytics check | stage | rehearse | show``.
"""
