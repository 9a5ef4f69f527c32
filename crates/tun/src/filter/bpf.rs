//! Classic BPF: the instruction format, a validator and a userspace interpreter.
//!
//! [`Program::new`] checks a program once (known opcodes only, every jump forward and inside the
//! program, the last instruction a `RET`, scratch indices below 16, no constant division by zero
//! or shift by 32 or more) and decodes it into [`Op`]s with absolute jump targets. Because every
//! step then moves the program counter strictly forward and the last instruction returns,
//! [`Program::run`] always terminates, never indexes out of bounds and never allocates. Its
//! semantics are those of libpcap's own interpreter (`pcap_offline_filter`) and of the kernel's:
//! loads are big-endian, a load past the end of the packet rejects the packet (returns 0), and so
//! does a division or modulo by a zero `X`.

use std::fmt;

/// One classic BPF instruction, laid out as C's `struct bpf_insn` (and the kernel's
/// `struct sock_filter`): opcode, true/false jump offsets, constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct BpfInsn {
    /// The opcode: class, size, mode / operation, source.
    pub code: u16,
    /// Conditional jumps: instructions to skip when the condition holds.
    pub jt: u8,
    /// Conditional jumps: instructions to skip when it does not.
    pub jf: u8,
    /// The constant operand (offset, immediate, scratch index, jump offset or return value).
    pub k: u32,
}

impl BpfInsn {
    /// An instruction from its four fields.
    pub const fn new(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
        BpfInsn { code, jt, jf, k }
    }
}

impl fmt::Display for BpfInsn {
    /// The `tcpdump -dd` form: `{ 0x28, 0, 0, 0x0000000c }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{ {:#04x}, {}, {}, {:#010x} }}",
            self.code, self.jt, self.jf, self.k
        )
    }
}

/// Opcode parts (`<pcap/bpf.h>` / `<linux/bpf_common.h>`).
pub(crate) mod op {
    // Classes.
    pub const LD: u16 = 0x00;
    pub const LDX: u16 = 0x01;
    pub const ST: u16 = 0x02;
    pub const STX: u16 = 0x03;
    pub const ALU: u16 = 0x04;
    pub const JMP: u16 = 0x05;
    pub const RET: u16 = 0x06;
    pub const MISC: u16 = 0x07;
    // Load sizes.
    pub const W: u16 = 0x00;
    pub const H: u16 = 0x08;
    pub const B: u16 = 0x10;
    // Load modes.
    pub const IMM: u16 = 0x00;
    pub const ABS: u16 = 0x20;
    pub const IND: u16 = 0x40;
    pub const MEM: u16 = 0x60;
    pub const LEN: u16 = 0x80;
    pub const MSH: u16 = 0xa0;
    // ALU operations.
    pub const ADD: u16 = 0x00;
    pub const SUB: u16 = 0x10;
    pub const MUL: u16 = 0x20;
    pub const DIV: u16 = 0x30;
    pub const OR: u16 = 0x40;
    pub const AND: u16 = 0x50;
    pub const LSH: u16 = 0x60;
    pub const RSH: u16 = 0x70;
    pub const NEG: u16 = 0x80;
    pub const MOD: u16 = 0x90;
    pub const XOR: u16 = 0xa0;
    // Jumps.
    pub const JA: u16 = 0x00;
    pub const JEQ: u16 = 0x10;
    pub const JGT: u16 = 0x20;
    pub const JGE: u16 = 0x30;
    pub const JSET: u16 = 0x40;
    // Operand source.
    pub const K: u16 = 0x00;
    pub const X: u16 = 0x08;
    // Return value source.
    pub const RET_A: u16 = 0x10;
    // Miscellaneous.
    pub const TAX: u16 = 0x00;
    pub const TXA: u16 = 0x80;
}

/// The number of 32-bit scratch memory words (`BPF_MEMWORDS`).
pub const SCRATCH_WORDS: u32 = 16;

/// Why a BPF program was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramError {
    /// The program has no instructions.
    Empty,
    /// An opcode that is not classic BPF (or not one libpcap's interpreter runs).
    UnknownOpcode {
        /// Instruction index.
        pc: usize,
        /// The opcode.
        code: u16,
    },
    /// A jump backwards (an unconditional jump whose offset is negative as a signed number, as
    /// libpcap compiles `protochain`): it could loop.
    BackwardJump {
        /// Instruction index.
        pc: usize,
    },
    /// A jump past the last instruction.
    JumpOutOfRange {
        /// Instruction index.
        pc: usize,
    },
    /// The last instruction is not a `RET`, so execution could run off the end.
    NoFinalReturn,
    /// A scratch memory index of 16 or more.
    BadScratchIndex {
        /// Instruction index.
        pc: usize,
        /// The index.
        index: u32,
    },
    /// A division or modulo by the constant 0.
    DivisionByZero {
        /// Instruction index.
        pc: usize,
    },
    /// A shift by the constant 32 or more.
    ShiftTooLarge {
        /// Instruction index.
        pc: usize,
        /// The shift.
        shift: u32,
    },
}

impl fmt::Display for ProgramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProgramError::Empty => write!(f, "BPF program is empty"),
            ProgramError::UnknownOpcode { pc, code } => {
                write!(f, "BPF instruction {pc}: unknown opcode {code:#06x}")
            }
            ProgramError::BackwardJump { pc } => write!(
                f,
                "BPF instruction {pc}: backward jump (libpcap compiles `protochain` this way); \
                 only forward jumps are run"
            ),
            ProgramError::JumpOutOfRange { pc } => {
                write!(f, "BPF instruction {pc}: jump past the end of the program")
            }
            ProgramError::NoFinalReturn => {
                write!(f, "BPF program does not end with a RET instruction")
            }
            ProgramError::BadScratchIndex { pc, index } => write!(
                f,
                "BPF instruction {pc}: scratch memory index {index} (there are {SCRATCH_WORDS})"
            ),
            ProgramError::DivisionByZero { pc } => {
                write!(f, "BPF instruction {pc}: division or modulo by constant 0")
            }
            ProgramError::ShiftTooLarge { pc, shift } => {
                write!(f, "BPF instruction {pc}: shift by {shift} (at most 31)")
            }
        }
    }
}

impl std::error::Error for ProgramError {}

/// A load width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Word,
    Half,
    Byte,
}

/// An ALU operation (the divisions are checked at run time only for `X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    And,
    Or,
    Xor,
    Lsh,
    Rsh,
}

/// A jump condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Eq,
    Gt,
    Ge,
    Set,
}

/// An operand: the constant or the index register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    K(u32),
    X,
}

/// A decoded, validated instruction. Scratch indices are below [`SCRATCH_WORDS`]; jump targets
/// are absolute, greater than the jump's own index and inside the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    RetK(u32),
    RetA,
    LdAbs(Size, u32),
    LdInd(Size, u32),
    LdLen,
    LdImm(u32),
    LdMem(u8),
    LdxImm(u32),
    LdxMem(u8),
    LdxLen,
    LdxMsh(u32),
    St(u8),
    Stx(u8),
    Alu(Alu, Src),
    Neg,
    Ja(u32),
    Jump {
        cond: Cond,
        src: Src,
        jt: u32,
        jf: u32,
    },
    Tax,
    Txa,
}

/// A validated classic BPF program, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Program {
    ops: Box<[Op]>,
}

impl Program {
    /// Validates and decodes `insns`.
    pub(crate) fn new(insns: &[BpfInsn]) -> Result<Program, ProgramError> {
        let last = insns.last().ok_or(ProgramError::Empty)?;
        if last.code & 0x07 != op::RET {
            return Err(ProgramError::NoFinalReturn);
        }
        let ops = insns
            .iter()
            .enumerate()
            .map(|(pc, insn)| decode(pc, insn, insns.len()))
            .collect::<Result<Box<[Op]>, ProgramError>>()?;
        Ok(Program { ops })
    }

    /// Runs the program on `packet` (captured whole: its length is also the wire length) and
    /// returns the `RET` value: 0 rejects, anything else accepts (as a snapshot length).
    pub(crate) fn run(&self, packet: &[u8]) -> u32 {
        let wire_len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let mut a: u32 = 0;
        let mut x: u32 = 0;
        let mut mem = [0u32; SCRATCH_WORDS as usize];
        let mut pc = 0usize;
        loop {
            // In bounds: `pc` starts at 0 and only moves to a validated jump target or to the
            // next instruction after a non-RET one, and the last instruction is a RET.
            let current = self.ops[pc];
            pc += 1;
            match current {
                Op::RetK(k) => return k,
                Op::RetA => return a,
                Op::LdAbs(size, k) => match load(packet, Some(k), size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::LdInd(size, k) => match load(packet, x.checked_add(k), size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                Op::LdLen => a = wire_len,
                Op::LdImm(k) => a = k,
                Op::LdMem(i) => a = mem[usize::from(i)],
                Op::LdxImm(k) => x = k,
                Op::LdxMem(i) => x = mem[usize::from(i)],
                Op::LdxLen => x = wire_len,
                Op::LdxMsh(k) => match load(packet, Some(k), Size::Byte) {
                    Some(v) => x = (v & 0xf) << 2,
                    None => return 0,
                },
                Op::St(i) => mem[usize::from(i)] = a,
                Op::Stx(i) => mem[usize::from(i)] = x,
                Op::Alu(alu, src) => {
                    let v = match src {
                        Src::K(k) => k,
                        Src::X => x,
                    };
                    a = match alu {
                        Alu::Add => a.wrapping_add(v),
                        Alu::Sub => a.wrapping_sub(v),
                        Alu::Mul => a.wrapping_mul(v),
                        Alu::Div => match a.checked_div(v) {
                            Some(q) => q,
                            None => return 0,
                        },
                        Alu::Mod => match a.checked_rem(v) {
                            Some(r) => r,
                            None => return 0,
                        },
                        Alu::And => a & v,
                        Alu::Or => a | v,
                        Alu::Xor => a ^ v,
                        Alu::Lsh => a.checked_shl(v).unwrap_or(0),
                        Alu::Rsh => a.checked_shr(v).unwrap_or(0),
                    };
                }
                Op::Neg => a = a.wrapping_neg(),
                Op::Ja(target) => pc = target as usize,
                Op::Jump { cond, src, jt, jf } => {
                    let v = match src {
                        Src::K(k) => k,
                        Src::X => x,
                    };
                    let taken = match cond {
                        Cond::Eq => a == v,
                        Cond::Gt => a > v,
                        Cond::Ge => a >= v,
                        Cond::Set => a & v != 0,
                    };
                    pc = (if taken { jt } else { jf }) as usize;
                }
                Op::Tax => x = a,
                Op::Txa => a = x,
            }
        }
    }
}

/// A big-endian load of `size` at `offset`; `None` (reject) when any byte is past the end.
#[inline]
fn load(packet: &[u8], offset: Option<u32>, size: Size) -> Option<u32> {
    let start = usize::try_from(offset?).ok()?;
    match size {
        Size::Byte => packet.get(start).map(|&b| u32::from(b)),
        Size::Half => {
            let b = packet.get(start..start.checked_add(2)?)?;
            Some(u32::from(u16::from_be_bytes([b[0], b[1]])))
        }
        Size::Word => {
            let b = packet.get(start..start.checked_add(4)?)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
}

/// Decodes instruction `pc` of a program of `len` instructions, checking it.
fn decode(pc: usize, insn: &BpfInsn, len: usize) -> Result<Op, ProgramError> {
    use op::*;
    let k = insn.k;
    let unknown = ProgramError::UnknownOpcode {
        pc,
        code: insn.code,
    };
    let scratch = || {
        if k < SCRATCH_WORDS {
            Ok(k as u8)
        } else {
            Err(ProgramError::BadScratchIndex { pc, index: k })
        }
    };
    // A jump target: `skip` instructions after the next one, which must exist.
    let target = |skip: u64| -> Result<u32, ProgramError> {
        let dest = pc as u64 + 1 + skip;
        if dest < len as u64 {
            u32::try_from(dest).map_err(|_| ProgramError::JumpOutOfRange { pc })
        } else {
            Err(ProgramError::JumpOutOfRange { pc })
        }
    };
    let code = insn.code;
    let op = match code & 0x07 {
        LD => match code {
            c if c == LD | W | ABS => Op::LdAbs(Size::Word, k),
            c if c == LD | H | ABS => Op::LdAbs(Size::Half, k),
            c if c == LD | B | ABS => Op::LdAbs(Size::Byte, k),
            c if c == LD | W | IND => Op::LdInd(Size::Word, k),
            c if c == LD | H | IND => Op::LdInd(Size::Half, k),
            c if c == LD | B | IND => Op::LdInd(Size::Byte, k),
            c if c == LD | W | LEN => Op::LdLen,
            c if c == LD | W | IMM => Op::LdImm(k),
            c if c == LD | W | MEM => Op::LdMem(scratch()?),
            _ => return Err(unknown),
        },
        LDX => match code {
            c if c == LDX | W | IMM => Op::LdxImm(k),
            c if c == LDX | W | MEM => Op::LdxMem(scratch()?),
            c if c == LDX | W | LEN => Op::LdxLen,
            c if c == LDX | B | MSH => Op::LdxMsh(k),
            _ => return Err(unknown),
        },
        ST if code == ST => Op::St(scratch()?),
        STX if code == STX => Op::Stx(scratch()?),
        ALU => {
            if code == ALU | NEG {
                Op::Neg
            } else {
                if code & !0xf8 != ALU {
                    return Err(unknown);
                }
                let alu = match code & 0xf0 {
                    ADD => Alu::Add,
                    SUB => Alu::Sub,
                    MUL => Alu::Mul,
                    DIV => Alu::Div,
                    MOD => Alu::Mod,
                    AND => Alu::And,
                    OR => Alu::Or,
                    XOR => Alu::Xor,
                    LSH => Alu::Lsh,
                    RSH => Alu::Rsh,
                    _ => return Err(unknown),
                };
                let src = if code & X != 0 {
                    Src::X
                } else {
                    match alu {
                        Alu::Div | Alu::Mod if k == 0 => {
                            return Err(ProgramError::DivisionByZero { pc });
                        }
                        Alu::Lsh | Alu::Rsh if k >= 32 => {
                            return Err(ProgramError::ShiftTooLarge { pc, shift: k });
                        }
                        _ => Src::K(k),
                    }
                };
                Op::Alu(alu, src)
            }
        }
        JMP => {
            if code == JMP | JA {
                if (k as i32) < 0 {
                    return Err(ProgramError::BackwardJump { pc });
                }
                Op::Ja(target(u64::from(k))?)
            } else {
                if code & !0xf8 != JMP {
                    return Err(unknown);
                }
                let cond = match code & 0xf0 {
                    JEQ => Cond::Eq,
                    JGT => Cond::Gt,
                    JGE => Cond::Ge,
                    JSET => Cond::Set,
                    _ => return Err(unknown),
                };
                let src = if code & X != 0 { Src::X } else { Src::K(k) };
                Op::Jump {
                    cond,
                    src,
                    jt: target(u64::from(insn.jt))?,
                    jf: target(u64::from(insn.jf))?,
                }
            }
        }
        RET => match code {
            c if c == RET | K => Op::RetK(k),
            c if c == RET | RET_A => Op::RetA,
            _ => return Err(unknown),
        },
        MISC => match code {
            c if c == MISC | TAX => Op::Tax,
            c if c == MISC | TXA => Op::Txa,
            _ => return Err(unknown),
        },
        _ => return Err(unknown),
    };
    Ok(op)
}
