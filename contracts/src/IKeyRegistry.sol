// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title anchormq key registry
/// @notice Anchors MQTT device (node) public keys and group memberships on chain. This interface is the single
/// source of the ABI: Rust reads it with `sol!`, the bridge rebuilds the full state from the events alone.
/// @dev IDs are bytes32; human IDs are left-aligned and zero-padded like Solidity's `bytes32("1111")`.
/// Public keys are 33-byte SEC1 compressed secp256k1 points. A group's epoch increases on every membership
/// change (member added, member removed, member roles set). Key rotation and revocation are O(1) and touch no
/// group: readers and senders follow a member's key and status from its node record, so no other account can
/// make them revert or cost more. The registry is open (anyone registers nodes and creates groups) unless it
/// was deployed with an operator, which makes it closed: only registrars the operator names may do either.
/// Membership needs consent: an admin can add a node only if it owns the node or the node's owner approved
/// that admin (`setAdminApproval`). A member holds roles, a uint8 bitmask: READ = 1 (it receives the group's
/// sender keys, so it can decrypt), WRITE = 2 (readers accept its messages); `addMember` gives both (3).
interface IKeyRegistry {
    /// @notice Lifecycle of a node. `None` means the ID was never registered.
    enum NodeStatus {
        None,
        Active,
        Revoked
    }

    /// @notice A node as returned by `getNode`.
    /// @param owner Account that registered the node (or accepted it by transfer); it rotates and revokes.
    /// @param keyVersion 1 at registration, +1 per rotation.
    /// @param status Active or Revoked (revocation is final).
    /// @param pendingOwner Account a transfer was offered to (zero when none); it becomes owner on accepting.
    /// @param publicKey The current 33-byte compressed public key.
    struct Node {
        address owner;
        uint32 keyVersion;
        NodeStatus status;
        address pendingOwner;
        bytes publicKey;
    }

    /// @notice A group as returned by `getGroup`.
    /// @param admin The only account that may add or remove members.
    /// @param epoch 0 at creation; +1 on every membership change.
    /// @param memberCount Current number of recorded members (a revoked node stays recorded until removed).
    /// @param pendingAdmin Account the admin role was offered to (zero when none).
    /// @param topicFilter MQTT topic filter the group protects; may be empty. Fixed at creation.
    struct Group {
        address admin;
        uint64 epoch;
        uint32 memberCount;
        address pendingAdmin;
        string topicFilter;
    }

    // ------------------------------------------------------------------ events

    /// @notice A node was registered by `owner` with key version 1.
    event NodeRegistered(bytes32 indexed nodeId, address indexed owner, bytes publicKey, uint32 keyVersion);

    /// @notice The node's key was replaced. No group changes: members re-key when a member's key changes.
    event NodeKeyRotated(bytes32 indexed nodeId, bytes publicKey, uint32 keyVersion, address actor);

    /// @notice The node was revoked (final). Its recorded memberships stay until removed, but a revoked node
    /// can neither read nor send in any group.
    event NodeRevoked(bytes32 indexed nodeId, address actor);

    /// @notice The owner offered the node to `pendingOwner` (zero: the offer was withdrawn).
    event NodeOwnershipTransferStarted(
        bytes32 indexed nodeId, address indexed owner, address indexed pendingOwner
    );

    /// @notice `newOwner` accepted the node; ownership moved from `previousOwner`.
    event NodeOwnershipTransferred(
        bytes32 indexed nodeId, address indexed previousOwner, address indexed newOwner
    );

    /// @notice A group was created with epoch 0, no members, and `admin` = the caller.
    event GroupCreated(bytes32 indexed groupId, address indexed admin, string topicFilter);

    /// @notice The admin offered the group to `pendingAdmin` (zero: the offer was withdrawn).
    event GroupAdminTransferStarted(
        bytes32 indexed groupId, address indexed admin, address indexed pendingAdmin
    );

    /// @notice `newAdmin` accepted the admin role; it moved from `previousAdmin`.
    event GroupAdminTransferred(
        bytes32 indexed groupId, address indexed previousAdmin, address indexed newAdmin
    );

    /// @notice `owner` allowed (or stopped allowing) `admin` to add the owner's nodes to the admin's groups.
    /// Withdrawing approval removes no existing membership (the owner uses `leaveGroup` for that).
    event AdminApprovalSet(address indexed owner, address indexed admin, bool approved);

    /// @notice `nodeId` joined the group; `epoch` is the group's new epoch.
    event MemberAdded(bytes32 indexed groupId, bytes32 indexed nodeId, uint64 epoch, address actor);

    /// @notice `nodeId` left the group (admin removal or owner leaving); `epoch` is the new epoch.
    event MemberRemoved(bytes32 indexed groupId, bytes32 indexed nodeId, uint64 epoch, address actor);

    /// @notice The member's roles became `roles` (READ = 1, WRITE = 2, both = 3); `epoch` is the new epoch
    /// (that of the `MemberAdded` just before it when the member joined with these roles). A `MemberAdded`
    /// alone means roles 3.
    event MemberRolesSet(
        bytes32 indexed groupId, bytes32 indexed nodeId, uint8 roles, uint64 epoch, address actor
    );

    /// @notice The registry's operator role moved (from zero at deployment of a closed registry).
    event OperatorTransferred(address indexed previousOperator, address indexed newOperator);

    /// @notice The operator offered its role to `pendingOperator` (zero: the offer was withdrawn).
    event OperatorTransferStarted(address indexed operator, address indexed pendingOperator);

    /// @notice The operator allowed (or stopped allowing) `registrar` to register nodes and create groups.
    event RegistrarSet(address indexed registrar, bool allowed);

    // ------------------------------------------------------------------ errors

    /// @notice A node or group ID of zero was given.
    error ZeroId();
    /// @notice The zero address was given where an account is needed.
    error ZeroAddress();
    /// @notice The node ID is taken (active or revoked; revoked IDs are never reused).
    error NodeAlreadyRegistered(bytes32 nodeId);
    /// @notice No node has this ID.
    error NodeNotFound(bytes32 nodeId);
    /// @notice `caller` is not the node's owner.
    error NotNodeOwner(bytes32 nodeId, address caller);
    /// @notice The node is revoked; it cannot be rotated, transferred, or added to a group.
    error NodeIsRevoked(bytes32 nodeId);
    /// @notice `caller` is not the account the node was offered to.
    error NotPendingNodeOwner(bytes32 nodeId, address caller);
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
    /// @notice `caller` is not the account the admin role was offered to.
    error NotPendingGroupAdmin(bytes32 groupId, address caller);
    /// @notice The node's owner has not approved `admin` (and is not `admin`): no consent to join.
    error AdminNotApproved(bytes32 nodeId, address owner, address admin);
    /// @notice The node is already a member of the group.
    error AlreadyMember(bytes32 groupId, bytes32 nodeId);
    /// A batch call was given no nodes.
    error EmptyNodeList();
    /// `registerNodes` was given lists of different lengths.
    error BatchLengthMismatch(uint256 nodeIds, uint256 publicKeys, uint256 signatures);
    /// @notice The node is not a member of the group.
    error NotMember(bytes32 groupId, bytes32 nodeId);
    /// @notice Roles must be 1 (READ), 2 (WRITE) or 3 (both).
    error InvalidRoles(uint8 roles);
    /// @notice The topic filter is longer than `limit` bytes.
    error TopicFilterTooLong(uint256 length, uint256 limit);
    /// @notice The topic filter is not a valid MQTT topic filter: the byte at `index` is not printable ASCII
    /// (0x20-0x7e), or is a wildcard that does not fill its level ('+'), or is not the last level ('#').
    error InvalidTopicFilter(uint256 index);
    /// @notice This registry is closed and `caller` is not a registrar.
    error NotRegistrar(address caller);
    /// @notice `caller` is not the registry's operator (or the registry is open and has none).
    error NotOperator(address caller);
    /// @notice `caller` is not the account the operator role was offered to.
    error NotPendingOperator(address caller);

    // ------------------------------------------------------------------ nodes

    /// @notice Registers `nodeId` owned by the caller, with key version 1. In a closed registry the caller
    /// must be a registrar.
    /// @param publicKey 33-byte compressed secp256k1 key.
    /// @param signature 65 bytes r || s || v (v 27/28, or 0/1) by the node key over the EIP-712 `NodeKey`
    /// struct (nodeId, owner = msg.sender, publicKey, keyVersion = 1); low-s only.
    function registerNode(bytes32 nodeId, bytes calldata publicKey, bytes calldata signature) external;

    /// @notice Registers several nodes in one transaction, each under `registerNode`'s rules (the caller owns
    /// them all); for onboarding a fleet. Reverts on an empty list (`EmptyNodeList`), lists of different
    /// lengths (`BatchLengthMismatch`) or any node `registerNode` would refuse; then nothing changes.
    function registerNodes(
        bytes32[] calldata nodeIds,
        bytes[] calldata publicKeys,
        bytes[] calldata signatures
    ) external;

    /// @notice Replaces the node's key (owner only); keyVersion += 1. Constant gas; touches no group.
    /// @param newPublicKey 33-byte compressed key, different from the current one.
    /// @param signature By the NEW key over `NodeKey`(nodeId, owner = msg.sender, newPublicKey, keyVersion + 1).
    function rotateKey(bytes32 nodeId, bytes calldata newPublicKey, bytes calldata signature) external;

    /// @notice Revokes the node for good (owner only). Constant gas; touches no group. The ID can never be
    /// registered again.
    function revokeNode(bytes32 nodeId) external;

    /// @notice Offers the node to `newOwner` (owner only); zero withdraws the offer. Nothing changes until
    /// `newOwner` calls `acceptNodeOwnership`, so a mistyped address freezes nothing.
    function transferNodeOwnership(bytes32 nodeId, address newOwner) external;

    /// @notice Takes ownership of a node offered to the caller.
    function acceptNodeOwnership(bytes32 nodeId) external;

    /// @notice Lets `admin` add the caller's nodes to `admin`'s groups (or stops it). An owner never needs to
    /// approve itself.
    function setAdminApproval(address admin, bool approved) external;

    // ------------------------------------------------------------------ groups

    /// @notice Creates a group administered by the caller, epoch 0, no members. In a closed registry the
    /// caller must be a registrar.
    /// @param topicFilter A valid MQTT topic filter of printable ASCII (or empty: the group claims no topic),
    /// at most MAX_TOPIC_FILTER_LENGTH bytes.
    function createGroup(bytes32 groupId, string calldata topicFilter) external;

    /// @notice Offers the admin role to `newAdmin` (admin only); zero withdraws the offer.
    function transferGroupAdmin(bytes32 groupId, address newAdmin) external;

    /// @notice Takes the admin role of a group offered to the caller.
    function acceptGroupAdmin(bytes32 groupId) external;

    /// @notice Adds an active, registered node with both roles (admin only, with the node owner's consent:
    /// the admin owns the node or its owner approved the admin); epoch += 1. Constant gas in group size.
    function addMember(bytes32 groupId, bytes32 nodeId) external;

    /// @notice Removes a member (admin only); epoch += 1. Constant gas in group size (swap and pop, so the
    /// order of `groupMembers` changes). Its roles go with it: a later add starts again with both.
    function removeMember(bytes32 groupId, bytes32 nodeId) external;

    /// @notice Adds several nodes at once, each under `addMember`'s rules; epoch += 1 once for the whole
    /// batch, so every sender in the group draws one new key, not one per node. Emits `MemberAdded` per
    /// node, all with the new epoch. Reverts on an empty list (`EmptyNodeList`) or any node `addMember`
    /// would refuse (including one listed twice: `AlreadyMember`); then nothing changes.
    function addMembers(bytes32 groupId, bytes32[] calldata nodeIds) external;

    /// @notice Removes several members at once (admin only); epoch += 1 once. Emits `MemberRemoved` per
    /// node, all with the new epoch. Reverts on an empty list or a node that is not a member.
    function removeMembers(bytes32 groupId, bytes32[] calldata nodeIds) external;

    /// @notice The node's owner takes the node out of a group; epoch += 1.
    function leaveGroup(bytes32 groupId, bytes32 nodeId) external;

    /// @notice Adds several nodes under `addMembers`' rules, each with `roles` (1 READ, 2 WRITE, 3 both)
    /// instead of both roles; epoch += 1 once. Emits per node `MemberAdded`, then `MemberRolesSet` unless
    /// `roles` is 3, all with the new epoch. Reverts `InvalidRoles` (checked right after the admin check), on
    /// an empty list, or on any node `addMember` would refuse; then nothing changes.
    function addMembersWithRoles(bytes32 groupId, bytes32[] calldata nodeIds, uint8 roles) external;

    /// @notice Sets the roles of several members to `roles` (admin only); epoch += 1 once. Emits
    /// `MemberRolesSet` per node, all with the new epoch, also for a member whose roles do not change.
    /// Granting a role the member does not hold needs the same consent as adding it (`AdminNotApproved`) and
    /// an active node (`NodeIsRevoked`); dropping roles needs neither, since the admin may remove the member
    /// outright. Reverts `InvalidRoles`, on an empty list, or on a node that is not a member (`NotMember`);
    /// then nothing changes.
    function setMemberRoles(bytes32 groupId, bytes32[] calldata nodeIds, uint8 roles) external;

    // ------------------------------------------------------------------ closed registries

    /// @notice Allows or disallows a registrar (operator only; only in a closed registry).
    function setRegistrar(address registrar, bool allowed) external;

    /// @notice Offers the operator role to `newOperator` (operator only); zero withdraws the offer.
    function transferOperator(address newOperator) external;

    /// @notice Takes the operator role offered to the caller.
    function acceptOperator() external;

    // ------------------------------------------------------------------ queries

    /// @notice The node; reverts `NodeNotFound` for an unknown ID.
    function getNode(bytes32 nodeId) external view returns (Node memory);

    /// @notice The group; reverts `GroupNotFound` for an unknown ID.
    function getGroup(bytes32 groupId) external view returns (Group memory);

    /// @notice Whether `nodeId` is recorded as a member of `groupId` (false for unknown IDs). A revoked
    /// node may still be recorded; it reads and sends nothing.
    function isMember(bytes32 groupId, bytes32 nodeId) external view returns (bool);

    /// @notice The member's roles (1 READ, 2 WRITE, 3 both); 0 when `nodeId` is not a member of `groupId`
    /// (or for unknown IDs). A revoked node keeps its recorded roles; it reads and sends nothing.
    function memberRoles(bytes32 groupId, bytes32 nodeId) external view returns (uint8);

    /// @notice Up to `limit` member IDs starting at position `offset` (empty past the end); reverts
    /// `GroupNotFound`. Order is unspecified and changes on removal.
    function groupMembers(bytes32 groupId, uint256 offset, uint256 limit)
        external
        view
        returns (bytes32[] memory members);

    /// @notice Whether `owner` approved `admin` to add its nodes to `admin`'s groups.
    function isAdminApproved(address owner, address admin) external view returns (bool);

    /// @notice The operator of a closed registry; zero for an open registry.
    function operator() external view returns (address);

    /// @notice The account the operator role was offered to (zero when none).
    function pendingOperator() external view returns (address);

    /// @notice Whether `account` may register nodes and create groups: always true in an open registry.
    function isRegistrar(address account) external view returns (bool);

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

    /// @notice Longest accepted topic filter, in bytes.
    function MAX_TOPIC_FILTER_LENGTH() external view returns (uint256);
}
