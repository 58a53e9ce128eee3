fn main() { println!("{}", impair::ebpf::object().len()); }
