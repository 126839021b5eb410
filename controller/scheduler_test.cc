// Filled in below (scheduler unit tests).
