// Placeholder so the manifest parses until the VIP benchmark is written.
fn main() {}
