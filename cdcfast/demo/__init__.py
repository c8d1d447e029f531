"""``cdcfast demo``: the whole pipeline on a generated live workload, on servers it starts and stops
itself (:mod:`cdcfast.demo.run`, :mod:`cdcfast.demo.servers`). ``schema.json`` is its schema (a
``system_schema`` dump like the corpora's), ``masking.yaml`` its masking rules."""
