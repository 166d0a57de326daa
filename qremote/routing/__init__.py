"""Where a message goes: smtproutes, MX resolution, and the ipme self-check."""
