"""The report of a scenario run, read from its result (the dict of result.json) only: the terminal tables
(`tables`), the timeline and map plots (`plots`), the self-contained page (`html`), and all three written at once
(`write`). Nothing here runs anything; the modules are separate so that the terminal view never loads matplotlib."""
