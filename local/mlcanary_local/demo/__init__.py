"""``mlcanary demo``: a complete canary story on the local stack (:mod:`.story`), drawn as a timeline
(:mod:`.timeline`)."""
