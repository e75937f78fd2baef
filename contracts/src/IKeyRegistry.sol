// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title anchormq key registry
/// @notice Anchors MQTT device (node) public keys and group memberships on chain. This interface is the single
/// source of the ABI: Rust reads it with `sol!`, the bridge rebuilds the full state from the events alone.
/// @dev IDs are bytes32; human IDs are left-aligned and zero-padded like Solidity's `bytes32("1111")`.
/// Public keys are 33-byte SEC1 compressed secp256k1 points. A group's epoch increases on every change that
/// alters who can read its messages: member added, member removed, a member's key rotated, a member revoked.
interface IKeyRegistry {
    /// @notice Lifecycle of a node. `None` means the ID was never registered.
    enum NodeStatus {
        None,
        Active,
        Revoked
    }

    /// @notice A node as returned by `getNode`.
    /// @param owner Account that registered the node (or received it by transfer); it rotates and revokes.
    /// @param keyVersion 1 at registration, +1 per rotation.
    /// @param status Active or Revoked (revocation is final).
    /// @param groupCount Number of groups the node is currently a member of.
    /// @param publicKey The current 33-byte compressed public key.
    struct Node {
        address owner;
        uint32 keyVersion;
        NodeStatus status;
        uint32 groupCount;
        bytes publicKey;
    }

    /// @notice A group as returned by `getGroup`.
    /// @param admin The only account that may add or remove members.
    /// @param epoch 0 at creation; +1 on every membership or member-key change.
    /// @param memberCount Current number of members.
    /// @param topicFilter MQTT topic filter the group protects; may be empty. Fixed at creation.
    struct Group {
        address admin;
        uint64 epoch;
        uint32 memberCount;
        string topicFilter;
    }

    // ------------------------------------------------------------------ events

    /// @notice A node was registered by `owner` with key version 1.
    event NodeRegistered(bytes32 indexed nodeId, address indexed owner, bytes publicKey, uint32 keyVersion);

    /// @notice The node's key was replaced. Followed, in the same transaction, by one `GroupEpochBumped`
    /// per group the node belongs to.
    event NodeKeyRotated(bytes32 indexed nodeId, bytes publicKey, uint32 keyVersion, address actor);

    /// @notice The node was revoked (final). Followed, in the same transaction, by one `MemberRemoved` per
    /// group the node belonged to.
    event NodeRevoked(bytes32 indexed nodeId, address actor);

    /// @notice Ownership of the node moved from `previousOwner` to `newOwner` (one step).
    event NodeOwnershipTransferred(
        bytes32 indexed nodeId, address indexed previousOwner, address indexed newOwner
    );

    /// @notice A group was created with epoch 0, no members, and `admin` = the caller.
    event GroupCreated(bytes32 indexed groupId, address indexed admin, string topicFilter);

    /// @notice The group's admin changed (one step).
    event GroupAdminTransferred(
        bytes32 indexed groupId, address indexed previousAdmin, address indexed newAdmin
    );

    /// @notice `nodeId` joined the group; `epoch` is the group's new epoch.
    event MemberAdded(bytes32 indexed groupId, bytes32 indexed nodeId, uint64 epoch, address actor);

    /// @notice `nodeId` left the group (admin removal, owner leaving, or revocation); `epoch` is the new epoch.
    event MemberRemoved(bytes32 indexed groupId, bytes32 indexed nodeId, uint64 epoch, address actor);

    /// @notice The group's epoch increased because member `nodeId` rotated to `keyVersion`.
    event GroupEpochBumped(bytes32 indexed groupId, bytes32 indexed nodeId, uint64 epoch, uint32 keyVersion);

    // ------------------------------------------------------------------ errors

    /// @notice A node or group ID of zero was given.
    error ZeroId();
    /// @notice The zero address was given as a new owner or admin.
    error ZeroAddress();
    /// @notice The node ID is taken (active or revoked; revoked IDs are never reused).
    error NodeAlreadyRegistered(bytes32 nodeId);
    /// @notice No node has this ID.
    error NodeNotFound(bytes32 nodeId);
    /// @notice `caller` is not the node's owner.
    error NotNodeOwner(bytes32 nodeId, address caller);
    /// @notice The node is revoked; it cannot be rotated, transferred, or added to a group.
    error NodeIsRevoked(bytes32 nodeId);
    /// @notice The public key is not 33 bytes long.
    error InvalidPublicKeyLength(uint256 length);
    /// @notice The public key's first byte is not 0x02 or 0x03.
    error InvalidPublicKeyPrefix(uint8 prefix);
    /// @notice The public key's x coordinate is not below the field prime p.
    error PublicKeyXOutOfRange(bytes32 x);
    /// @notice No curve point has this x coordinate.
    error PublicKeyNotOnCurve(bytes32 x);
    /// @notice A rotation must change the key.
    error PublicKeyUnchanged(bytes32 nodeId);
    /// @notice The signature is not 65 bytes (r || s || v).
    error InvalidSignatureLength(uint256 length);
    /// @notice The signature's v is not 27, 28, 0 or 1.
    error InvalidSignatureV(uint8 v);
    /// @notice The signature's s is above n/2 (the malleable twin of a valid signature).
    error SignatureMalleable(bytes32 s);
    /// @notice The signature does not recover to the address of the given public key.
    /// @param expected Ethereum address of the public key being proven.
    /// @param recovered Address recovered from the signature (zero when recovery failed).
    error InvalidSignature(address expected, address recovered);
    /// @notice The group ID is taken.
    error GroupAlreadyExists(bytes32 groupId);
    /// @notice No group has this ID.
    error GroupNotFound(bytes32 groupId);
    /// @notice `caller` is not the group's admin.
    error NotGroupAdmin(bytes32 groupId, address caller);
    /// @notice The node is already a member of the group.
    error AlreadyMember(bytes32 groupId, bytes32 nodeId);
    /// @notice The node is not a member of the group.
    error NotMember(bytes32 groupId, bytes32 nodeId);
    /// @notice The node already belongs to `limit` groups.
    error NodeGroupLimitReached(bytes32 nodeId, uint256 limit);
    /// @notice The topic filter is longer than `limit` bytes.
    error TopicFilterTooLong(uint256 length, uint256 limit);
    /// @notice The group list given to rotateKey/revokeNode does not have one entry per group of the node.
    error GroupListLengthMismatch(bytes32 nodeId, uint256 expected, uint256 given);
    /// @notice The group list is not strictly ascending at `index` (so it may hold duplicates).
    error GroupListNotAscending(uint256 index);

    // ------------------------------------------------------------------ nodes

    /// @notice Registers `nodeId` owned by the caller, with key version 1.
    /// @param publicKey 33-byte compressed secp256k1 key.
    /// @param signature 65 bytes r || s || v (v 27/28, or 0/1) by the node key over the EIP-712 `NodeKey`
    /// struct (nodeId, owner = msg.sender, publicKey, keyVersion = 1); low-s only.
    function registerNode(bytes32 nodeId, bytes calldata publicKey, bytes calldata signature) external;

    /// @notice Replaces the node's key (owner only); keyVersion += 1 and every group of the node gets a new
    /// epoch (`GroupEpochBumped` each).
    /// @param newPublicKey 33-byte compressed key, different from the current one.
    /// @param signature By the NEW key over `NodeKey`(nodeId, owner = msg.sender, newPublicKey, keyVersion + 1).
    /// @param groups Exactly the node's groups, strictly ascending (length == groupCount).
    function rotateKey(
        bytes32 nodeId,
        bytes calldata newPublicKey,
        bytes calldata signature,
        bytes32[] calldata groups
    ) external;

    /// @notice Revokes the node for good (owner only) and removes it from every group (`MemberRemoved` each,
    /// with the new epoch). The ID can never be registered again.
    /// @param groups Exactly the node's groups, strictly ascending (length == groupCount).
    function revokeNode(bytes32 nodeId, bytes32[] calldata groups) external;

    /// @notice Moves ownership of an active node to `newOwner` in one step (owner only).
    function transferNodeOwnership(bytes32 nodeId, address newOwner) external;

    // ------------------------------------------------------------------ groups

    /// @notice Creates a group administered by the caller, epoch 0, no members.
    /// @param topicFilter MQTT topic filter (may be empty), at most MAX_TOPIC_FILTER_LENGTH bytes.
    function createGroup(bytes32 groupId, string calldata topicFilter) external;

    /// @notice Moves the admin role in one step (admin only).
    function transferGroupAdmin(bytes32 groupId, address newAdmin) external;

    /// @notice Adds an active, registered node (admin only); epoch += 1. Constant gas in group size.
    function addMember(bytes32 groupId, bytes32 nodeId) external;

    /// @notice Removes a member (admin only); epoch += 1. Constant gas in group size (swap and pop, so the
    /// order of `groupMembers` changes).
    function removeMember(bytes32 groupId, bytes32 nodeId) external;

    /// @notice The node's owner takes the node out of a group; epoch += 1. Lets an owner escape groups it
    /// did not ask to join (which would otherwise fill its MAX_GROUPS_PER_NODE slots).
    function leaveGroup(bytes32 groupId, bytes32 nodeId) external;

    // ------------------------------------------------------------------ queries

    /// @notice The node; reverts `NodeNotFound` for an unknown ID.
    function getNode(bytes32 nodeId) external view returns (Node memory);

    /// @notice Number of groups the node is in (what rotateKey/revokeNode expect); reverts `NodeNotFound`.
    function nodeGroupCount(bytes32 nodeId) external view returns (uint256);

    /// @notice The group; reverts `GroupNotFound` for an unknown ID.
    function getGroup(bytes32 groupId) external view returns (Group memory);

    /// @notice Whether `nodeId` is currently a member of `groupId` (false for unknown IDs).
    function isMember(bytes32 groupId, bytes32 nodeId) external view returns (bool);

    /// @notice Up to `limit` member IDs starting at position `offset` (empty past the end); reverts
    /// `GroupNotFound`. Order is unspecified and changes on removal.
    function groupMembers(bytes32 groupId, uint256 offset, uint256 limit)
        external
        view
        returns (bytes32[] memory members);

    /// @notice The EIP-712 digest the node key signs for registerNode (keyVersion 1) and rotateKey.
    function nodeKeyDigest(bytes32 nodeId, address owner, bytes calldata publicKey, uint32 keyVersion)
        external
        view
        returns (bytes32);

    /// @notice EIP-712 domain separator for this chain and registry address.
    function domainSeparator() external view returns (bytes32);

    /// @notice EIP-5267 description of the EIP-712 domain.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        );

    /// @notice keccak256("NodeKey(bytes32 nodeId,address owner,bytes publicKey,uint32 keyVersion)").
    function NODE_KEY_TYPEHASH() external view returns (bytes32);

    /// @notice Most groups one node can be in (bounds the cost of rotateKey/revokeNode).
    function MAX_GROUPS_PER_NODE() external view returns (uint256);

    /// @notice Longest accepted topic filter, in bytes.
    function MAX_TOPIC_FILTER_LENGTH() external view returns (uint256);
}
