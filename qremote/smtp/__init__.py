"""The SMTP client: a sans-I/O conversation (``conversation``), reply parsing
(``replies``), body encoding (``body``) and the asyncio driver (``session``)."""
