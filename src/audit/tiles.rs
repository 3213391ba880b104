//! The log served as C2SP tlog-tiles: hash tiles (`tile/L/N[.p/W]`, height 8) read from
//! the tree file, and entry bundles (`tile/entries/N[.p/W]`: each record's exact line,
//! prefixed by its length as a big-endian u16) read from the segments.
//!
//! Only what the latest signed checkpoint covers is served, so every tile a monitor
//! fetches can be checked against a signature it already holds.

use std::path::PathBuf;

use tlog_tiles::Tile;

use super::AuditError;
use super::tree::HASHES_FILE;
use super::tree::file::{HashFile, first_seq, for_each_line};

/// Tile height: C2SP tlog-tiles fixes it at 8 (256 hashes or entries per full tile).
const HEIGHT: u8 = 8;
/// Entries or hashes in a full tile.
const WIDTH: u64 = 1 << HEIGHT;

/// The latest signed checkpoint and what it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The signed note, exactly as recorded.
    pub note: String,
    /// The tree size it states.
    pub size: u64,
    /// The note verifier key of the audit key that signed it.
    pub verifier_key: String,
    /// The log's directory.
    pub dir: PathBuf,
}

/// A tile asked for by its path (after `tile/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePath {
    /// `L/N[.p/W]`: hashes at tree level 8·L.
    Hashes {
        /// Tile level.
        level: u8,
        /// Tile index within the level.
        index: u64,
        /// Hashes in it (256 for a full tile).
        width: u64,
    },
    /// `entries/N[.p/W]`: records `256·N ..`.
    Entries {
        /// Bundle index.
        index: u64,
        /// Records in it (256 for a full bundle).
        width: u64,
    },
}

impl TilePath {
    /// Parses a path after `tile/`, in the one spelling C2SP allows (so a cache keyed
    /// by path never holds two copies of one tile).
    pub fn parse(path: &str) -> Option<TilePath> {
        let (kind, rest) = path.split_once('/')?;
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                let w: u64 = width.parse().ok()?;
                (w.to_string() == width && (1..WIDTH).contains(&w)).then_some((index, w))?
            }
            None => (rest, WIDTH),
        };
        let index = parse_index(index)?;
        if kind == "entries" {
            return Some(TilePath::Entries { index, width });
        }
        let level: u8 = kind.parse().ok()?;
        // Level 8 already spans 2^64 leaves.
        (level.to_string() == kind && level < 8).then_some(TilePath::Hashes {
            level,
            index,
            width,
        })
    }

    /// The tree size the tile needs: its last leaf's position plus one.
    fn needs(&self) -> Option<u64> {
        let (level, index, width) = match *self {
            TilePath::Hashes {
                level,
                index,
                width,
            } => (level, index, width),
            TilePath::Entries { index, width } => (0, index, width),
        };
        index
            .checked_mul(WIDTH)?
            .checked_add(width)?
            .checked_mul(1u64.checked_shl(u32::from(level) * 8)?)
    }
}

/// `x001/x234/067` → 1234067: groups of three digits, all but the last prefixed `x`.
fn parse_index(text: &str) -> Option<u64> {
    let groups: Vec<&str> = text.split('/').collect();
    let (last, leading) = groups.split_last()?;
    let mut index = 0u64;
    for (i, group) in groups.iter().enumerate() {
        let digits = if i < leading.len() {
            group.strip_prefix('x')?
        } else {
            last
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    // No leading zero groups: one spelling per index.
    (groups.len() == 1 || leading[0] != "x000").then_some(index)
}

/// Why a tile cannot be served.
#[derive(Debug)]
pub enum TileError {
    /// No such tile for the published tree (a malformed path, or past its size).
    NotFound(String),
    /// The files could not be read.
    Io(AuditError),
}

/// Reads tile `path` of the log `published` describes.
pub fn read(published: &Published, path: &TilePath) -> Result<Vec<u8>, TileError> {
    let needs = path.needs().unwrap_or(u64::MAX);
    if needs > published.size {
        return Err(TileError::NotFound(format!(
            "the latest checkpoint covers {} records; this tile needs {needs}",
            published.size
        )));
    }
    match *path {
        TilePath::Hashes {
            level,
            index,
            width,
        } => {
            let file = HashFile::reader(&published.dir).map_err(TileError::Io)?;
            let width = u32::try_from(width).expect("a tile holds at most 256");
            Tile::new(HEIGHT, level, index, width, false)
                .read_data(&file)
                .map_err(|e| TileError::Io(AuditError::Io(format!("{HASHES_FILE}: {e}"))))
        }
        TilePath::Entries { index, width } => {
            let from = index * WIDTH;
            let first = first_seq(&published.dir).map_err(TileError::Io)?;
            if first.is_none_or(|first| from < first) {
                return Err(TileError::NotFound(format!(
                    "records from seq {from} are no longer in the log's directory (archived)"
                )));
            }
            let mut bundle = Vec::new();
            for_each_line(&published.dir, from, from + width, |line| {
                let len = u16::try_from(line.len()).map_err(|_| {
                    AuditError::Io(format!(
                        "a record of {} bytes does not fit an entry bundle",
                        line.len()
                    ))
                })?;
                bundle.extend_from_slice(&len.to_be_bytes());
                bundle.extend_from_slice(line);
                Ok(())
            })
            .map_err(TileError::Io)?;
            Ok(bundle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_parse_in_their_one_spelling() {
        let hashes = |level, index, width| TilePath::Hashes {
            level,
            index,
            width,
        };
        assert_eq!(TilePath::parse("0/000"), Some(hashes(0, 0, 256)));
        assert_eq!(
            TilePath::parse("1/x001/x234/067"),
            Some(hashes(1, 1234067, 256))
        );
        assert_eq!(TilePath::parse("0/005.p/17"), Some(hashes(0, 5, 17)));
        assert_eq!(
            TilePath::parse("entries/x001/000.p/255"),
            Some(TilePath::Entries {
                index: 1000,
                width: 255
            })
        );
        for bad in [
            "",
            "0",
            "0/5",
            "0/0005",
            "0/x000/005",
            "0/005.p/0",
            "0/005.p/256",
            "0/005.p/07",
            "8/000",
            "00/000",
            "0/001/002",
            "x/000",
            "entries/000.p/",
            "0/x1000/000",
        ] {
            assert_eq!(TilePath::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tile_needs_the_leaves_up_to_its_right_edge() {
        let path = TilePath::parse("0/001.p/3").unwrap();
        assert_eq!(path.needs(), Some(259));
        assert_eq!(TilePath::parse("1/000").unwrap().needs(), Some(65536));
        assert_eq!(TilePath::parse("entries/002").unwrap().needs(), Some(768));
        assert_eq!(
            TilePath::parse("7/x018/x446/x744/x073/x709/x551/615")
                .unwrap()
                .needs(),
            None
        );
    }
}
