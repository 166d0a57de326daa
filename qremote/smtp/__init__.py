"""The SMTP client: a sans-I/O conversation (``conversation``), reply parsing
(``replies``), body encoding (``body``), the asyncio driver (``session``) and the idle
connections qremoted keeps for the next message (``pool``)."""
